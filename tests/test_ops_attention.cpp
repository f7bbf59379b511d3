// causal_attention: gradient checks (float64) and CPU-vs-CUDA (f32, bf16, f64) over one table;
// forward and backward against the unfused composition (matmul, masked_fill, softmax, matmul
// with repeated k/v) within 1e-12 in float64, including long rows (T = 300) with large logits;
// the log-sum-exp against a naive long-double loop; nn::SelfAttention with segment ids given
// or recovered from the mask; error messages.
#define BOOST_TEST_MODULE ops_attention
#include "op_harness.hpp"

#include <cmath>

#include "deviant/nn/layers.hpp"
#include "deviant/ops/attention.hpp"
#include "deviant/ops/index.hpp"
#include "deviant/ops/matmul.hpp"
#include "deviant/ops/shape.hpp"
#include "deviant/ops/softmax.hpp"

using namespace deviant;
using namespace deviant::testing;

namespace {

Tensor segments_of(const std::vector<std::int64_t>& ids, std::int64_t B, std::int64_t T) { return Tensor::from(ids, {B, T}); }

// Segment ids for B rows of length T: packed sequences of `len` tokens, the last `pad` tokens of
// each row padding (their own id -1, as a separate segment).
Tensor packed_segments(std::int64_t B, std::int64_t T, std::int64_t len, std::int64_t pad) {
    std::vector<std::int64_t> s(std::size_t(B * T));
    for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t t = 0; t < T; ++t) s[std::size_t(b * T + t)] = t >= T - pad ? -1 : (t + b) / len;
    return Tensor::from(s, {B, T});
}

struct Config {
    std::string name;
    std::int64_t B, H, Hkv, T, D;
    Tensor segments;
    double lo = -1.0, hi = 1.0;
};

OpCase attention_case(const Config& c, double scale) {
    Tensor seg = c.segments;
    return {c.name,
            {InputSpec::uniform({c.B, c.H, c.T, c.D}, c.lo, c.hi), InputSpec::uniform({c.B, c.Hkv, c.T, c.D}, c.lo, c.hi),
             InputSpec::uniform({c.B, c.Hkv, c.T, c.D}, c.lo, c.hi)},
            [seg, scale](Tape&, std::vector<Var>& v) { return causal_attention(v[0], v[1], v[2], seg, scale); }};
}

std::vector<Config> small_configs() {
    return {
        {"GQA 4/2, packed and padded", 2, 4, 2, 7, 6, segments_of({0, 0, 0, 1, 1, 2, 2, 5, 5, 5, 5, 5, -1, -1}, 2, 7)},
        {"GQA 4/1, padding", 2, 4, 1, 5, 4, segments_of({0, 0, 0, 0, -1, 0, 0, -1, -1, -1}, 2, 5)},
        {"MHA 2/2, one segment", 2, 2, 2, 6, 8, Tensor::zeros({2, 6}, DType::i64)},
        {"GQA 2/1, T = 19 (not a tile multiple), packed", 1, 2, 1, 19, 4, packed_segments(1, 19, 7, 2)},
        {"first token alone in its segment", 1, 2, 2, 4, 3, segments_of({3, 1, 1, 1}, 1, 4)},
    };
}

std::vector<OpCase> table() {
    std::vector<OpCase> t;
    for (const auto& c : small_configs()) t.push_back(attention_case(c, 1.0 / std::sqrt(double(c.D))));
    return t;
}

// Larger shapes for the device: several query and key tiles, every head-size bucket (up to 8
// dims per lane), long rows.
std::vector<OpCase> device_table() {
    auto t = table();
    std::vector<Config> big = {
        {"T = 45, D = 24, GQA 4/2, packed", 2, 4, 2, 45, 24, packed_segments(2, 45, 13, 5)},
        {"T = 64, D = 64, GQA 8/2", 2, 8, 2, 64, 64, packed_segments(2, 64, 40, 3)},
        {"T = 100, D = 128, MHA", 1, 2, 2, 100, 128, packed_segments(1, 100, 1000, 0)},
        {"T = 33, D = 200, GQA 2/1", 1, 2, 1, 33, 200, packed_segments(1, 33, 9, 4)},
        {"T = 300, D = 32, GQA 4/1, long rows", 2, 4, 1, 300, 32, packed_segments(2, 300, 230, 20), -2.0, 2.0},
    };
    for (const auto& c : big) t.push_back(attention_case(c, 1.0 / std::sqrt(double(c.D))));
    for (auto& c : t) c.cuda_tol = 1e-5;
    return t;
}

// The unfused composition: scores (B, H, T, T), masked_fill, softmax, matmul, k/v repeated per group.
Var unfused_attention(Var q, Var k, Var v, const Tensor& segments, double scale_factor) {
    std::int64_t B = q.shape()[0], H = q.shape()[1], T = q.shape()[2], D = q.shape()[3], Hkv = k.shape()[1];
    if (Hkv != H) {
        auto repeat = [&](Var y) { return reshape(expand(unsqueeze(y, 2), {B, Hkv, H / Hkv, T, D}), {B, H, T, D}); };
        k = repeat(k);
        v = repeat(v);
    }
    Var scores = scale(matmul(q, transpose(k, -1, -2)), scale_factor);
    scores = masked_fill(scores, causal_segment_mask(segments), -std::numeric_limits<double>::infinity());
    return matmul(softmax(scores, -1), v);
}


struct ProjectionNames {
    static constexpr std::string_view attn_q = "q", attn_k = "k", attn_v = "v", attn_o = "o";
};

struct Result {
    std::vector<std::vector<double>> values;  // output, dq, dk, dv
};

// Output and input gradients (seeded with a fixed random output gradient) of f in float64.
Result run(const std::function<Var(Var, Var, Var)>& f, const std::vector<Tensor>& inputs) {
    std::vector<Parameter> params;
    for (std::size_t i = 0; i < inputs.size(); ++i) params.emplace_back("x" + std::to_string(i), inputs[i].clone());
    Tape tape;
    Var y = f(tape.param(params[0]), tape.param(params[1]), tape.param(params[2]));
    std::mt19937 rng(3);
    Tensor seed = random_tensor(y.shape(), rng, -1, 1, y.dtype());
    Result r{{y.value().to_vector<double>()}};
    tape.backward(y, seed);
    for (auto& p : params) r.values.push_back(p.grad.to_vector<double>());
    return r;
}

void check_against_unfused(const Config& c, double scale_factor, double tol) {
    std::vector<Tensor> in = make_inputs(attention_case(c, scale_factor), DType::f64, 17);
    Tensor seg = c.segments;
    Result fused = run([&](Var q, Var k, Var v) { return causal_attention(q, k, v, seg, scale_factor); }, in);
    Result plain = run([&](Var q, Var k, Var v) { return unfused_attention(q, k, v, seg, scale_factor); }, in);
    const char* what[] = {"output", "dq", "dk", "dv"};
    for (int i = 0; i < 4; ++i) {
        double err = relative_error(fused.values[std::size_t(i)], plain.values[std::size_t(i)]);
        BOOST_TEST_INFO(c.name << " " << what[i] << ": relative error " << err);
        BOOST_TEST(err < tol);
    }
}

}  // namespace

BOOST_AUTO_TEST_CASE(gradients) { run_gradchecks(table()); }

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_f32, *boost::unit_test::precondition(cuda_device)) { run_cpu_vs_cuda(device_table()); }

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_bf16, *boost::unit_test::precondition(cuda_device)) {
    run_cpu_vs_cuda(device_table(), DType::bf16, 1e3);
}

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_f64, *boost::unit_test::precondition(cuda_device)) {
    run_cpu_vs_cuda(device_table(), DType::f64, 1e-6);
}

BOOST_AUTO_TEST_CASE(matches_unfused_composition) {
    for (const auto& c : small_configs()) check_against_unfused(c, 1.0 / std::sqrt(double(c.D)), 1e-12);
    check_against_unfused({"T = 45, GQA 4/2, packed", 2, 4, 2, 45, 8, packed_segments(2, 45, 13, 5)}, 0.3, 1e-12);
}

// Long rows with large, widely spread logits: the online softmax rescales its running sum many
// times and must still agree with the two-pass softmax of the unfused composition.
BOOST_AUTO_TEST_CASE(long_rows_online_softmax) {
    check_against_unfused({"T = 300, GQA 4/2, one segment", 1, 4, 2, 300, 16, Tensor::zeros({1, 300}, DType::i64), -3.0, 3.0}, 1.0, 1e-12);
    check_against_unfused({"T = 300, GQA 2/1, packed", 2, 2, 1, 300, 8, packed_segments(2, 300, 170, 11), -3.0, 3.0}, 2.0, 1e-12);
}

// lse against a naive long-double log-sum-exp over the allowed keys.
BOOST_AUTO_TEST_CASE(log_sum_exp_matches_naive_loop) {
    const std::int64_t B = 2, H = 2, Hkv = 1, T = 40, D = 5;
    std::mt19937 rng(23);
    Tensor q = random_tensor({B, H, T, D}, rng, -4, 4), k = random_tensor({B, Hkv, T, D}, rng, -4, 4), v = random_tensor({B, Hkv, T, D}, rng);
    Tensor seg = packed_segments(B, T, 15, 3);
    double scale_factor = 0.7;
    ops::AttentionOutput r = ops::causal_attention_forward(q, k, v, seg, scale_factor);
    auto qv = q.to_vector<double>(), kv = k.to_vector<double>(), lse = r.lse.to_vector<double>();
    auto sv = seg.to_vector<std::int64_t>();
    BOOST_REQUIRE(r.lse.shape() == Shape({B, H, T}));
    for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t h = 0; h < H; ++h)
            for (std::int64_t i = 0; i < T; ++i) {
                long double s = 0;
                for (std::int64_t j = 0; j <= i; ++j) {
                    if (sv[std::size_t(b * T + j)] != sv[std::size_t(b * T + i)]) continue;
                    long double dot = 0;
                    for (std::int64_t d = 0; d < D; ++d)
                        dot += (long double)qv[std::size_t(((b * H + h) * T + i) * D + d)] * kv[std::size_t((b * T + j) * D + d)];
                    s += std::exp((long double)scale_factor * dot);
                }
                double want = double(std::log(s));
                double got = lse[std::size_t((b * H + h) * T + i)];
                BOOST_TEST(std::abs(got - want) <= 1e-12 * (1 + std::abs(want)), b << "," << h << "," << i << ": " << got << " vs " << want);
            }
}

// A token alone in its segment attends to itself only: the output is its own value row.
BOOST_AUTO_TEST_CASE(isolated_tokens_copy_their_value) {
    std::mt19937 rng(2);
    Tensor q = random_tensor({1, 2, 4, 3}, rng), k = random_tensor({1, 1, 4, 3}, rng), v = random_tensor({1, 1, 4, 3}, rng);
    Tensor out = ops::causal_attention(q, k, v, segments_of({0, 1, 2, 3}, 1, 4), 1.0);
    auto o = out.to_vector<double>(), vv = v.to_vector<double>();
    for (std::size_t h = 0; h < 2; ++h)
        for (std::size_t n = 0; n < 12; ++n) BOOST_TEST(o[h * 12 + n] == vv[n]);
}

BOOST_AUTO_TEST_CASE(rejects_bad_inputs) {
    Tensor q = Tensor::zeros({1, 3, 4, 2}, DType::f64), k = Tensor::zeros({1, 2, 4, 2}, DType::f64);
    Tensor seg = Tensor::zeros({1, 4}, DType::i64);
    BOOST_CHECK_EXCEPTION(ops::causal_attention(q, k, k, seg, 1.0), Error,
                          [](const Error& e) { return std::string(e.what()).find("not a multiple") != std::string::npos; });
    Tensor q2 = Tensor::zeros({1, 2, 4, 2}, DType::f64);
    BOOST_CHECK_EXCEPTION(ops::causal_attention(q2, k, k, Tensor::zeros({1, 5}, DType::i64), 1.0), Error,
                          [](const Error& e) { return std::string(e.what()).find("segment ids") != std::string::npos; });
    BOOST_CHECK_EXCEPTION(ops::causal_attention(q2, k, k, Tensor::zeros({1, 4}, DType::f32), 1.0), Error,
                          [](const Error& e) { return std::string(e.what()).find("segment ids") != std::string::npos; });
    BOOST_CHECK_EXCEPTION(ops::causal_attention(q2, k.to(DType::f32), k, seg, 1.0), Error,
                          [](const Error& e) { return std::string(e.what()).find("dtypes differ") != std::string::npos; });
    BOOST_CHECK_EXCEPTION(ops::causal_attention(q2, Tensor::zeros({1, 2, 3, 2}, DType::f64), Tensor::zeros({1, 2, 3, 2}, DType::f64), seg, 1.0),
                          Error, [](const Error& e) { return std::string(e.what()).find("does not match") != std::string::npos; });
}

// nn::SelfAttention with segment ids in the context, recovered from the mask, and written out
// as the unfused composition from the same projections all agree.
BOOST_AUTO_TEST_CASE(self_attention_layer_uses_segments) {
    io::ModelConfig c;
    c.model_type = "llama";
    c.hidden_size = 8;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 2;
    c.rope_theta = 10000.0;
    ParameterStore store(DType::f64, 5);
    nn::SelfAttention<nn::SeparateQkv<ProjectionNames>, nn::RotaryPositions> attn;
    attn.bind(store, "attn", c);
    std::mt19937 rng(4);
    for (auto& p : store.parameters()) p.value = random_tensor(p.value.shape(), rng, -0.5, 0.5);
    Tensor seg = segments_of({0, 0, 0, 1, 1, 2, 2, 2, 2, 2, -1, -1}, 2, 6);
    Tensor x = random_tensor({2, 6, 8}, rng);
    ForwardContext given{c, positions_from_segments(seg), causal_segment_mask(seg), seg};
    ForwardContext recovered{c, positions_from_segments(seg), causal_segment_mask(seg)};
    BOOST_TEST(recovered.segment_ids().to_vector<std::int64_t>() ==
                   (std::vector<std::int64_t>{0, 0, 0, 3, 3, 5, 0, 0, 0, 0, 4, 4}),
               boost::test_tools::per_element());
    NoGradGuard ng;
    Tape t;
    auto a = attn.forward(t, t.constant(x), given).value().to_vector<double>();
    auto b = attn.forward(t, t.constant(x), recovered).value().to_vector<double>();
    // unfused, from the same projections
    auto& P = attn.proj;
    Var xv = t.constant(x);
    auto heads = [&](Var y, std::int64_t n) { return transpose(reshape(y, {2, 6, n, 2}), 1, 2); };
    Var q = rope(heads(P.q.forward(t, xv), 4), given.positions, c.rope_theta);
    Var k = rope(heads(P.k.forward(t, xv), 2), given.positions, c.rope_theta);
    Var v = heads(P.v.forward(t, xv), 2);
    Var o = unfused_attention(q, k, v, seg, 1.0 / std::sqrt(2.0));
    auto want = P.o.forward(t, reshape(transpose(o, 1, 2), {2, 6, 8})).value().to_vector<double>();
    BOOST_TEST(relative_error(a, want) < 1e-12);
    BOOST_TEST(relative_error(b, want) < 1e-12);
}

BOOST_AUTO_TEST_CASE(mask_that_is_not_causal_within_segments_is_rejected) {
    io::ModelConfig c;
    std::vector<std::uint8_t> m{0, 1, 1, 0, 0, 1, 1, 0, 0};  // token 2 sees token 1 but not token 0
    ForwardContext ctx{c, Tensor::zeros({1, 3}, DType::i64), Tensor::from(m, {1, 1, 3, 3})};
    BOOST_CHECK_EXCEPTION(ctx.segment_ids(), Error,
                          [](const Error& e) { return std::string(e.what()).find("not causal within segments") != std::string::npos; });
}

// A sequence gives bit-identical outputs and gradients wherever it sits in a row: alone and
// right-padded, or packed after another sequence (so padded and packed training agree exactly,
// and a reference computed on padded rows equals the policy on packed rows at step 0).
BOOST_AUTO_TEST_CASE(position_in_row_does_not_change_results) {
    std::mt19937 rng(77);
    const std::int64_t H = 4, Hkv = 2, D = 8, len = 150, pre = 37, T = 200;  // len > 2 blocks of 64
    auto rand = [](Shape s, std::mt19937& g) { return random_tensor(s, g, -1, 1, DType::f32); };
    Tensor seq_q = rand({1, H, len, D}, rng), seq_k = rand({1, Hkv, len, D}, rng), seq_v = rand({1, Hkv, len, D}, rng);
    Tensor seq_dout = rand({1, H, len, D}, rng);
    auto place = [&](const Tensor& x, std::int64_t offset, std::mt19937& fill) {  // x into a (1, h, T, D) row at `offset`
        Tensor row = rand({1, x.size(1), T, D}, fill);
        Tensor view = row.narrow(2, offset, len);
        ops::copy_into(view, x);
        return row;
    };
    auto segments = [&](std::int64_t offset) {
        std::vector<std::int64_t> s(std::size_t(T), 2);
        for (std::int64_t t = 0; t < offset; ++t) s[std::size_t(t)] = 0;
        for (std::int64_t t = offset; t < offset + len; ++t) s[std::size_t(t)] = 1;
        return Tensor::from(s, {1, T});
    };
    std::vector<std::vector<double>> results[2];
    for (int k = 0; k < 2; ++k) {
        const std::int64_t offset = k == 0 ? 0 : pre;
        std::mt19937 fill(100 + unsigned(k));
        Tensor q = place(seq_q, offset, fill), kk = place(seq_k, offset, fill), v = place(seq_v, offset, fill);
        Tensor dout = place(seq_dout, offset, fill), seg = segments(offset);
        auto f = ops::causal_attention_forward(q, kk, v, seg, 0.3);
        auto g = ops::causal_attention_backward(q, kk, v, seg, f.out, f.lse, dout, 0.3);
        for (const Tensor* t : {&f.out, &g.dq, &g.dk, &g.dv}) results[k].push_back(t->narrow(2, offset, len).contiguous().to_vector<double>());
    }
    const char* names[] = {"out", "dq", "dk", "dv"};
    for (int i = 0; i < 4; ++i) BOOST_TEST(results[0][std::size_t(i)] == results[1][std::size_t(i)], names[i]);
}
