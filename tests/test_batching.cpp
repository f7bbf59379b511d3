// Batching: packed rows give the same per-sequence log-probs, losses and gradients as padded
// rows, and both equal each sequence scored alone (tiny random Llama and GPT-2, float64);
// first-fit placement and segment ids by hand; truncation (TRL's conventions) by hand;
// tokenised text pairs against the tokenizer fixtures (one BOS, one EOS, chat format).
#define BOOST_TEST_MODULE batching
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>

#include "expect_error.hpp"
#include "tiny_models.hpp"
#include "gradcheck.hpp"
#include "deviant/data/text_pairs.hpp"
#include "deviant/models/load.hpp"
#include "deviant/objectives/registry.hpp"
#include "deviant/train/pair_rows.hpp"
#include "deviant/train/truncation.hpp"

using namespace deviant;
using deviant::testing::throws_naming;

namespace {

io::ModelConfig tiny_config(io::ModelFamily family) { return testing::tiny_config(family, 13, 32); }

std::vector<std::int64_t> random_ids(std::mt19937& rng, std::size_t n) {
    std::uniform_int_distribution<std::int64_t> u(0, 12);
    std::vector<std::int64_t> v(n);
    for (auto& x : v) x = u(rng);
    return v;
}

// Pairs of assorted lengths (prompt 1..5, completions 1..6).
std::vector<data::TokenPair> random_pairs(std::mt19937& rng, std::size_t count) {
    std::uniform_int_distribution<std::size_t> lp(1, 5), lc(1, 6);
    std::uniform_real_distribution<double> w(0.0, 2.0);
    std::vector<data::TokenPair> pairs;
    for (std::size_t i = 0; i < count; ++i) {
        data::TokenPair p;
        p.prompt = random_ids(rng, lp(rng));
        p.chosen = random_ids(rng, lc(rng));
        p.rejected = random_ids(rng, lc(rng));
        p.weight = w(rng);
        pairs.push_back(p);
    }
    return pairs;
}

double rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-300); }

// Summed completion log-prob of one sequence scored alone, from the model's log-probs of a
// single unpadded row: an independent reference for both layouts.
template <class Model>
double alone(const Model& m, const std::vector<std::int64_t>& prompt, const std::vector<std::int64_t>& completion) {
    std::vector<std::int64_t> ids(prompt);
    ids.insert(ids.end(), completion.begin(), completion.end());
    NoGradGuard ng;
    Tape t;
    Tensor lpt = m.next_token_logprobs(t, TokenBatch{Tensor::from(ids, {1, std::int64_t(ids.size())}), {}}).value();
    auto lp = lpt.to_vector<double>();
    double s = 0;
    for (std::size_t k = prompt.size() - 1; k + 1 < ids.size(); ++k) s += lp[k];
    return s;
}

struct Scored {
    std::vector<double> chosen, rejected, ref_chosen, grads;
    double loss = 0;
};

template <class Model>
Scored score(Model& policy, const Model& ref, const SequenceRows& rows, const std::string& objective) {
    policy.store.zero_grad();
    Tape tape;
    PairLogps lp = pair_logps(tape, policy, rows, /*with_prompt_nll=*/true);
    std::tie(lp.ref_chosen_logp, lp.ref_rejected_logp) = reference_logps(ref, rows);
    ObjectiveResult r = make_objective(objective)(lp);
    Scored s{lp.chosen_logp.value().to_vector<double>(), lp.rejected_logp.value().to_vector<double>(), lp.ref_chosen_logp.to_vector<double>(),
             {}, r.loss.value().item()};
    auto full = lp.chosen_full_logp.value().to_vector<double>();
    s.chosen.insert(s.chosen.end(), full.begin(), full.end());  // compared as well
    tape.backward(r.loss);
    for (const Parameter& p : policy.parameters())
        for (double g : p.grad.to_vector<double>()) s.grads.push_back(g);
    return s;
}

template <class Model>
void check_packing_equivalence(io::ModelFamily family) {
    std::mt19937 rng(family == io::ModelFamily::gpt2 ? 21 : 17);
    Model policy(tiny_config(family), {}, 1, DType::f64), ref(tiny_config(family), {}, 2, DType::f64);
    for (Model* m : {&policy, &ref})
        for (auto& p : m->parameters()) p.value = testing::random_tensor(p.value.shape(), rng, -0.5, 0.5);
    auto pairs = random_pairs(rng, 7);
    SequenceRows padded = make_rows(pairs, DType::f64);
    for (std::int64_t row_tokens : {11, 16, 30}) {
        BOOST_TEST_CONTEXT("row_tokens " << row_tokens) {
            SequenceRows packed = make_packed_rows(pairs, row_tokens, DType::f64);
            BOOST_TEST(packed.rows() < padded.rows());  // packing actually shares rows
            BOOST_TEST(packed.batch.ids.size(1) <= row_tokens);
            for (const char* objective : {"dpo", "ddpo", "orpo", "ipo"}) {
                BOOST_TEST_CONTEXT(objective) {
                    Scored a = score(policy, ref, padded, objective), b = score(policy, ref, packed, objective);
                    BOOST_TEST(testing::relative_error(b.chosen, a.chosen) < 1e-12);
                    BOOST_TEST(testing::relative_error(b.rejected, a.rejected) < 1e-12);
                    BOOST_TEST(testing::relative_error(b.ref_chosen, a.ref_chosen) < 1e-12);
                    BOOST_TEST(rel(b.loss, a.loss) < 1e-12);
                    BOOST_TEST(testing::relative_error(b.grads, a.grads) < 1e-12);
                    // both equal each sequence scored on its own
                    for (std::size_t i = 0; i < pairs.size(); ++i) {
                        BOOST_TEST(rel(b.chosen[i], alone(policy, pairs[i].prompt, pairs[i].chosen)) < 1e-12, "pair " << i);
                        BOOST_TEST(rel(b.rejected[i], alone(policy, pairs[i].prompt, pairs[i].rejected)) < 1e-12, "pair " << i);
                        BOOST_TEST(rel(a.ref_chosen[i], alone(ref, pairs[i].prompt, pairs[i].chosen)) < 1e-12, "pair " << i);
                    }
                }
            }
        }
    }
}

data::TokenPair pair_of(std::vector<std::int64_t> p, std::vector<std::int64_t> c, std::vector<std::int64_t> r) {
    data::TokenPair t;
    t.prompt = std::move(p);
    t.chosen = std::move(c);
    t.rejected = std::move(r);
    return t;
}

const std::filesystem::path kTokenizers = std::filesystem::path(DEVIANT_TEST_DATA_DIR) / "tokenizers";

}  // namespace

BOOST_AUTO_TEST_CASE(packed_equals_padded_llama) { check_packing_equivalence<Llama>(io::ModelFamily::llama); }

BOOST_AUTO_TEST_CASE(packed_equals_padded_gpt2) { check_packing_equivalence<Gpt2>(io::ModelFamily::gpt2); }

BOOST_AUTO_TEST_CASE(first_fit_layout_by_hand) {
    // sequences (lengths): c0 = 2+3 = 5, r0 = 2+1 = 3, c1 = 1+4 = 5, r1 = 1+2 = 3; rows of 8:
    // c0 -> row 0 [0, 5); r0 -> row 0 [5, 8); c1 -> row 1 [0, 5); r1 -> row 1 [5, 8).
    std::vector<data::TokenPair> pairs{pair_of({1, 2}, {3, 4, 5}, {6}), pair_of({7}, {8, 9, 10, 11}, {12, 1})};
    SequenceRows rows = make_packed_rows(pairs, 8);
    BOOST_TEST((rows.batch.ids.shape() == Shape{2, 8}));
    BOOST_TEST(rows.batch.ids.to_vector<std::int64_t>() == std::vector<std::int64_t>({1, 2, 3, 4, 5, 1, 2, 6, 7, 8, 9, 10, 11, 7, 12, 1}),
               boost::test_tools::per_element());
    BOOST_TEST(rows.batch.segments.to_vector<std::int64_t>() == std::vector<std::int64_t>({0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1}),
               boost::test_tools::per_element());
    // sequences: 0 = c0, 1 = c1, 2 = r0, 3 = r1. Column t predicts token t+1 of the row.
    BOOST_TEST(rows.completion_index.to_vector<std::int64_t>() ==
                   std::vector<std::int64_t>({-1, 0, 0, 0, -1, -1, 2, /*row 1*/ 1, 1, 1, 1, -1, 3, 3}),
               boost::test_tools::per_element());
    BOOST_TEST(rows.full_index.to_vector<std::int64_t>() == std::vector<std::int64_t>({0, 0, 0, 0, -1, 2, 2, 1, 1, 1, 1, -1, 3, 3}),
               boost::test_tools::per_element());
    BOOST_TEST(rows.completion_tokens.to_vector<double>() == std::vector<double>({3, 4, 1, 2}), boost::test_tools::per_element());
    BOOST_TEST(rows.full_tokens.to_vector<double>() == std::vector<double>({4, 4, 2, 2}), boost::test_tools::per_element());
    // A later short sequence fills an earlier row's gap (first-fit): rows of 6.
    std::vector<data::TokenPair> gap{pair_of({1}, {2, 3}, {4, 5, 6, 7}), pair_of({1}, {2}, {3})};
    // c0 = 3 -> row 0; r0 = 5 -> row 1; c1 = 2 -> row 0 [3, 5); r1 = 2 -> row 2? no: row 1 is full (5+2 > 6), row 0 is 5+2 > 6 -> row 2
    SequenceRows g = make_packed_rows(gap, 6);
    BOOST_TEST((g.batch.ids.shape() == Shape{3, 5}));
    BOOST_TEST(g.batch.ids.to_vector<std::int64_t>() == std::vector<std::int64_t>({1, 2, 3, 1, 2, 1, 4, 5, 6, 7, 1, 3, 0, 0, 0}),
               boost::test_tools::per_element());
    BOOST_TEST(g.batch.segments.to_vector<std::int64_t>() == std::vector<std::int64_t>({0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1}),
               boost::test_tools::per_element());
    // padded layout keeps the old contract: row s = sequence s
    SequenceRows padded = make_rows(pairs);
    BOOST_TEST((padded.batch.ids.shape() == Shape{4, 5}));
    BOOST_TEST(padded.completion_mask.to_vector<double>() ==
                   std::vector<double>({0, 1, 1, 1, /*c1*/ 1, 1, 1, 1, /*r0*/ 0, 1, 0, 0, /*r1*/ 1, 1, 0, 0}),
               boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(packing_errors_name_the_pair) {
    std::vector<data::TokenPair> pairs{pair_of({1, 2}, {3}, {4}), pair_of({1, 2, 3}, {4, 5}, {6, 7, 8, 9})};
    BOOST_TEST(throws_naming([&] { make_packed_rows(pairs, 6); }, {"pair 1", "rejected", "7 tokens", "6 tokens"}));
    BOOST_TEST(throws_naming([&] { make_packed_rows(pairs, 1); }, {"row_tokens = 1"}));
    std::vector<data::TokenPair> empty{pair_of({1}, {2}, {})};
    BOOST_TEST(throws_naming([&] { make_rows(empty); }, {"pair 0", "rejected"}));
    BOOST_TEST(throws_naming([&] { make_packed_rows(std::vector<data::TokenPair>{pair_of({}, {2}, {3})}, 8); }, {"pair 0", "empty prompt"}));
}

BOOST_AUTO_TEST_CASE(truncation_follows_trl) {
    data::TokenPair p = pair_of({1, 2, 3, 4, 5, 6}, {10, 11, 12, 13}, {20, 21});
    TruncationOptions o;
    o.max_prompt_length = 4;
    o.max_length = 7;
    TruncationReport rep;
    data::TokenPair t = truncate_pair(p, o, 0, &rep);
    BOOST_TEST(t.prompt == std::vector<std::int64_t>({3, 4, 5, 6}), boost::test_tools::per_element());  // keep_end
    BOOST_TEST(t.chosen == std::vector<std::int64_t>({10, 11, 12}), boost::test_tools::per_element());  // 4 + 3 = 7, start kept
    BOOST_TEST(t.rejected == std::vector<std::int64_t>({20, 21}), boost::test_tools::per_element());    // fits: untouched
    BOOST_TEST(rep.prompts_truncated == 1u);
    BOOST_TEST(rep.chosen_truncated == 1u);
    BOOST_TEST(rep.rejected_truncated == 0u);
    BOOST_TEST(rep.tokens_removed == 3u);
    o.prompt_mode = TruncationOptions::Mode::keep_start;
    BOOST_TEST(truncate_pair(p, o, 0).prompt == std::vector<std::int64_t>({1, 2, 3, 4}), boost::test_tools::per_element());
    // max_completion_length alone
    TruncationOptions c;
    c.max_completion_length = 1;
    data::TokenPair tc = truncate_pair(p, c, 0);
    BOOST_TEST(tc.prompt == p.prompt, boost::test_tools::per_element());
    BOOST_TEST(tc.chosen == std::vector<std::int64_t>({10}), boost::test_tools::per_element());
    BOOST_TEST(tc.rejected == std::vector<std::int64_t>({20}), boost::test_tools::per_element());
    // no limits: unchanged
    data::TokenPair same = truncate_pair(p, TruncationOptions{}, 0);
    BOOST_TEST(same.chosen == p.chosen, boost::test_tools::per_element());
    // max_length without a prompt limit: a long prompt leaves nothing -> error naming the pair
    TruncationOptions m;
    m.max_length = 6;
    std::vector<data::TokenPair> pairs{pair_of({1}, {2}, {3}), p};
    BOOST_TEST(throws_naming([&] { truncate_pairs(pairs, m); }, {"pair 1", "chosen", "truncated to nothing", "max_length is 6"}));
    TruncationOptions bad;
    bad.max_length = 4;
    bad.max_prompt_length = 4;
    BOOST_TEST(throws_naming([&] { truncate_pair(p, bad, 0); }, {"max_prompt_length 4", "max_length 4"}));
    bad.max_prompt_length = -1;
    BOOST_TEST(throws_naming([&] { truncate_pair(p, bad, 0); }, {">= 0"}));
    // every sequence of the result fits max_length
    std::mt19937 rng(4);
    auto many = random_pairs(rng, 50);
    TruncationOptions fit;
    fit.max_length = 6;
    fit.max_prompt_length = 3;
    for (const auto& q : truncate_pairs(many, fit)) {
        BOOST_TEST(q.prompt.size() + q.chosen.size() <= 6u);
        BOOST_TEST(q.prompt.size() + q.rejected.size() <= 6u);
        BOOST_TEST(!q.chosen.empty());
    }
}

BOOST_AUTO_TEST_CASE(tokenised_pairs_llama3_chat) {
    const BpeTokenizer tok = BpeTokenizer::from_json_file(kTokenizers / "llama3_style.json");
    const TokenId bos = *tok.bos_id(), eos = *tok.eos_id();
    data::TextPair tp{"Write about a dragon.", "The dragon slept.", "A dragon<|end_of_text|>", 0.5, "pairs.jsonl:3"};
    data::TokenPair p = data::tokenize_pair(tok, tp);
    // the prompt is encode_chat of one user turn (BOS added once by the tokenizer's post-processor)
    BOOST_TEST(p.prompt == encode_chat(tok, std::vector<ChatMessage>{{"user", tp.prompt}}), boost::test_tools::per_element());
    BOOST_TEST(tok.decode(std::vector<TokenId>(p.prompt.begin(), p.prompt.end())) ==
               "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWrite about a dragon.<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n");
    for (const auto* c : {&p.chosen, &p.rejected}) {
        std::vector<std::int64_t> all(p.prompt);
        all.insert(all.end(), c->begin(), c->end());
        BOOST_TEST(std::count(all.begin(), all.end(), bos) == 1);
        BOOST_TEST(std::count(all.begin(), all.end(), eos) == 1);
        BOOST_TEST(all.front() == bos);
        BOOST_TEST(all.back() == eos);
    }
    std::vector<std::int64_t> body(p.chosen.begin(), p.chosen.end() - 1);
    auto want = tok.encode(tp.chosen, false);
    BOOST_TEST(body == std::vector<std::int64_t>(want.begin(), want.end()), boost::test_tools::per_element());
    BOOST_TEST(p.weight == 0.5);
    // raw text: BOS + text, and a prompt already starting with BOS is not doubled
    data::TokenizeOptions raw;
    raw.use_chat_template = false;
    auto rp = data::tokenize_prompt(tok, "Hello there", raw);
    auto plain = tok.encode("Hello there", false);
    plain.insert(plain.begin(), bos);
    BOOST_TEST(rp == std::vector<std::int64_t>(plain.begin(), plain.end()), boost::test_tools::per_element());
    BOOST_TEST(data::tokenize_prompt(tok, "<|begin_of_text|>Hello there", raw) == rp, boost::test_tools::per_element());
    // another end token on request
    data::TokenizeOptions eot;
    eot.eos_token = "<|eot_id|>";
    BOOST_TEST(data::tokenize_completion(tok, "Hi", eot).back() == *tok.token_to_id("<|eot_id|>"));
    BOOST_TEST(throws_naming([&] { data::tokenize_completion(tok, "Hi", data::TokenizeOptions{true, "", "<nope>"}); }, {"<nope>"}));
    // empty completions are errors naming the origin
    data::TextPair empty{"p", "", "r", 1.0, "pairs.jsonl:7"};
    BOOST_TEST(throws_naming([&] { data::tokenize_pair(tok, empty); }, {"pairs.jsonl:7", "chosen"}));
    data::TextPair only_eos{"p", "c", "<|end_of_text|>", 1.0, ""};
    BOOST_TEST(throws_naming([&] { data::tokenize_pairs(tok, std::vector<data::TextPair>{tp, only_eos}); }, {"pair 1", "rejected"}));
}

BOOST_AUTO_TEST_CASE(tokenised_pairs_bos_eos_other_tokenizers) {
    {
        // post-processor adds <s> ... </s>: the prompt gets <s> only, each completion one </s>
        const BpeTokenizer tok = BpeTokenizer::from_json_file(kTokenizers / "fallback_style.json");
        const TokenId bos = *tok.bos_id(), eos = *tok.eos_id();
        for (bool chat : {true, false}) {
            data::TokenizeOptions o;
            o.use_chat_template = chat;
            data::TokenPair p = data::tokenize_pair(tok, {"hello world", "a story</s>", "another", 1.0, ""}, o);
            BOOST_TEST(p.prompt.front() == bos);
            BOOST_TEST(std::count(p.prompt.begin(), p.prompt.end(), bos) == 1);
            BOOST_TEST(std::count(p.prompt.begin(), p.prompt.end(), eos) == (chat ? 1 : 0));  // the plain chat format ends the user turn with EOS text
            BOOST_TEST(p.prompt.back() != eos);
            for (const auto* c : {&p.chosen, &p.rejected}) {
                BOOST_TEST(c->back() == eos);
                BOOST_TEST(std::count(c->begin(), c->end(), eos) == 1);
                BOOST_TEST(std::count(c->begin(), c->end(), bos) == 0);
            }
        }
    }
    {
        // GPT-2: BOS and EOS are the same <|endoftext|>: one at the start, one at the end
        const BpeTokenizer tok = BpeTokenizer::from_json_file(kTokenizers / "gpt2_style.json");
        const TokenId eot = *tok.token_to_id("<|endoftext|>");
        data::TokenizeOptions raw;
        raw.use_chat_template = false;
        data::TokenPair p = data::tokenize_pair(tok, {"Once", " upon a time", " the end", 1.0, ""}, raw);
        BOOST_TEST(p.prompt.front() == eot);
        BOOST_TEST(std::count(p.prompt.begin(), p.prompt.end(), eot) == 1);
        BOOST_TEST(p.chosen.back() == eot);
        BOOST_TEST(std::count(p.chosen.begin(), p.chosen.end(), eot) == 1);
    }
}

BOOST_AUTO_TEST_CASE(text_pairs_file_feeds_the_rows) {
    auto path = std::filesystem::temp_directory_path() / "deviant_batching_pairs.jsonl";
    std::ofstream(path) << R"({"prompt":"Write.","chosen":"Long story here.","rejected":"Short.","weight":1.5,"chosen_score":9})" "\n"
                        << R"({"prompt":"Again.","chosen":"Yes.","rejected":"No."})" "\n";
    auto text = data::read_text_pairs(path);
    BOOST_TEST(text.size() == 2u);
    BOOST_TEST(text[0].weight == 1.5);
    BOOST_TEST(text[1].weight == 1.0);
    BOOST_TEST(text[1].origin == path.string() + ":2");
    const BpeTokenizer tok = BpeTokenizer::from_json_file(kTokenizers / "llama3_style.json");
    auto pairs = data::tokenize_pairs(tok, text);
    std::int64_t total = 0;
    for (const auto& p : pairs) total += std::int64_t(2 * p.prompt.size() + p.chosen.size() + p.rejected.size());
    SequenceRows rows = make_packed_rows(pairs, total);
    BOOST_TEST(rows.rows() == 1);
    BOOST_TEST(rows.batch.ids.size(1) == total);
    BOOST_TEST(rows.chosen_weight.to_vector<double>() == std::vector<double>({1.5, 1.0}), boost::test_tools::per_element());
    std::ofstream(path) << R"({"prompt":"Write.","chosen":"x"})" "\n";
    BOOST_TEST(throws_naming([&] { data::read_text_pairs(path); }, {path.string() + ":1", "rejected"}));
    std::filesystem::remove(path);
}
