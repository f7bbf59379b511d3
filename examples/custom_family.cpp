// A model family defined in user code, without touching the library: Llama's layout with a
// different norm. Builds a small random model, runs a forward and backward pass over a packed
// batch, and checks that every parameter received a finite gradient. (docs/adding-a-layer.md)
#include <deviant/models/families.hpp>

#include <cstdio>

using namespace deviant;

struct MyNorm {
    Parameter* weight = nullptr;
    void bind(ParameterStore& s, const std::string& prefix, const ModelConfig& c) {
        weight = &s.get(nn::join(prefix, "weight"), {c.hidden_size}, Init::ones);
    }
    Var forward(Tape& t, Var x) const {  // x (B, T, C)
        return x * rsqrt(mean(square(x), -1, true) + 1e-6) * t.param(*weight);
    }
};

struct MyNames : LlamaNames {};
using MyArchitecture =
    DecoderOnly<MyNames, nn::NoPositionEmbedding,
                nn::PreNormBlock<MyNames, MyNorm, nn::SelfAttention<nn::SeparateQkv<MyNames>, nn::RotaryPositions>, nn::SwiGlu<MyNames>>,
                MyNorm>;
using MyModel = CausalLm<MyArchitecture>;

int main() {
    ModelConfig c;
    c.model_type = "my-llama";
    c.vocab_size = 50;
    c.hidden_size = 16;
    c.intermediate_size = 32;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 4;
    c.max_position_embeddings = 64;
    MyModel model(c, {}, /*seed=*/1);
    // two sequences packed into one row (segments 0 and 1), one padded row
    TokenBatch batch{Tensor::from(std::vector<std::int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 0}, {2, 6}),
                     Tensor::from(std::vector<std::int64_t>{0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1}, {2, 6})};
    Tape tape;
    Var loss = scale(sum_all(model.next_token_logprobs(tape, batch)), -1.0 / 10);
    tape.backward(loss);
    int missing = 0;
    for (const Parameter& p : model.parameters()) {
        bool ok = p.grad.defined();
        if (ok)
            for (double g : p.grad.to_vector<double>()) ok = ok && std::isfinite(g);
        if (!ok) std::printf("no finite gradient for %s\n", p.name.c_str()), ++missing;
    }
    std::printf("custom family: %lld parameters, loss %.4f (uniform would be %.4f)\n", (long long)model.num_parameters(),
                loss.value().item(), std::log(50.0));
    return missing == 0 ? 0 : 1;
}
