// Training DDPO from your own code: load a checkpoint, attach LoRA adapters, take reference
// log-probs with the adapters switched off, train, and export the adapters in PEFT's layout.
//   example_train_ddpo MODEL_DIR PAIRS.jsonl OUTPUT_DIR
// PAIRS.jsonl holds token-id pairs: {"prompt_ids":[..],"chosen_ids":[..],"rejected_ids":[..],"weight":w}
// where w is the chosen response's deviation weight (`deviant pairs` computes it from text).
#include <deviant/models/load.hpp>
#include <deviant/nn/lora.hpp>
#include <deviant/train/trainer.hpp>

#include <cstdio>

using namespace deviant;

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: %s MODEL_DIR PAIRS.jsonl OUTPUT_DIR\n", argv[0]);
        return 2;
    }
    try {
        return with_pretrained(argv[1], [&](auto& model) {
            auto pairs = data::read_token_pairs(argv[2], model.config.vocab_size);

            // 1. LoRA adapters on every attention and MLP projection; the base stays frozen.
            nn::LoraConfig lora;
            lora.rank = 8;
            lora.alpha = 16;
            nn::LoraAdapters adapters;
            adapters.attach(model, lora);

            // 2. The reference is the base model: the same weights with the adapters off.
            ReferenceLogps reference;
            {
                nn::AdaptersDisabled off(adapters);
                reference = compute_reference_logps(model, pairs, /*batch_size=*/4);
            }

            // 3. DDPO: DPO weighted by each pair's chosen deviation weight.
            TrainingOptions options;
            options.objective = "ddpo";
            options.objective_options.beta = 0.1;
            options.learning_rate = 1e-3;
            options.epochs = 3;
            options.batch_size = 2;
            options.progress = false;
            std::vector<Parameter*> trainable;
            for (auto& p : adapters.parameters()) trainable.push_back(&p);
            Trainer trainer(model, trainable, pairs, reference, options);
            trainer.set_eval(pairs, reference);

            double before = trainer.evaluate()["eval/loss"];
            TrainingHistory history = trainer.train();
            double after = history.evals.back()["eval/loss"];
            std::printf("%zu steps: eval loss %.4f -> %.4f, accuracy %.2f\n", history.steps.size(), before, after,
                        double(history.evals.back()["eval/rewards/accuracies"]));

            // 4. Adapters out, loadable by PEFT (or merged into the base with adapters.merge_into_base()).
            adapters.export_peft(argv[3]);
            return after < before ? 0 : 1;
        });
    } catch (const Error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
