// View ops on Var (reshape, transpose, permute, narrow, slice, select, unsqueeze, squeeze,
// contiguous, expand) and ops::copy_into: gradient checks and CPU-vs-CUDA over one table,
// forward values against naive index loops, and error messages.
#define BOOST_TEST_MODULE ops_shape
#include "expect_error.hpp"
#include "op_harness.hpp"

#include "deviant/ops/shape.hpp"

using namespace deviant;
using namespace deviant::testing;

namespace {
using U = InputSpec;

std::vector<OpCase> table() {
    return {
        {"reshape", {U::uniform({3, 4})}, [](Tape&, std::vector<Var>& v) { return reshape(v[0], {2, -1}); }},
        {"reshape of a transposed input (copies)", {U::uniform({3, 4})},
         [](Tape&, std::vector<Var>& v) { return reshape(transpose(v[0], 0, 1), {12}); }},
        {"transpose", {U::uniform({2, 3, 4})}, [](Tape&, std::vector<Var>& v) { return transpose(v[0], 0, -1); }},
        {"transpose same axis", {U::uniform({2, 3})}, [](Tape&, std::vector<Var>& v) { return transpose(v[0], 1, 1); }},
        {"permute", {U::uniform({2, 3, 4})}, [](Tape&, std::vector<Var>& v) { return permute(v[0], {2, 0, 1}); }},
        {"narrow", {U::uniform({4, 5})}, [](Tape&, std::vector<Var>& v) { return narrow(v[0], 1, 1, 3); }},
        {"narrow negative start", {U::uniform({4, 5})}, [](Tape&, std::vector<Var>& v) { return narrow(v[0], 0, -2, 2); }},
        {"slice with step", {U::uniform({7, 3})}, [](Tape&, std::vector<Var>& v) { return slice(v[0], 0, 1, 7, 2); }},
        {"select", {U::uniform({3, 4, 2})}, [](Tape&, std::vector<Var>& v) { return select(v[0], 1, -1); }},
        {"unsqueeze", {U::uniform({3, 2})}, [](Tape&, std::vector<Var>& v) { return unsqueeze(v[0], -1); }},
        {"squeeze", {U::uniform({3, 1, 2})}, [](Tape&, std::vector<Var>& v) { return squeeze(v[0], 1); }},
        {"contiguous of a permuted input", {U::uniform({2, 3, 4})},
         [](Tape&, std::vector<Var>& v) { return contiguous(permute(v[0], {1, 2, 0})); }},
        {"expand", {U::uniform({3, 1})}, [](Tape&, std::vector<Var>& v) { return expand(v[0], {2, 3, 4}); }},
        {"expand to the same shape", {U::uniform({2, 3})}, [](Tape&, std::vector<Var>& v) { return expand(v[0], {2, 3}); }},
        {"overlapping narrows of one value", {U::uniform({5, 2})},
         [](Tape&, std::vector<Var>& v) { return narrow(v[0], 0, 0, 4) * narrow(v[0], 0, 1, 4); }},
        {"chain of views", {U::uniform({4, 6})},
         [](Tape&, std::vector<Var>& v) { return reshape(select(transpose(slice(v[0], 1, 1, 5), 0, 1), 0, 2), {2, 2}); }},
        {"view of a strided slice then expand", {U::uniform({4, 3})},
         [](Tape&, std::vector<Var>& v) { return expand(unsqueeze(slice(v[0], 0, 0, 4, 3), 0), {3, 2, 3}); }},
    };
}

Tensor iota(const Shape& s) {
    std::vector<double> v(std::size_t(s.numel()));
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = double(i);
    return Tensor::from(v, s);
}
}  // namespace

BOOST_AUTO_TEST_CASE(gradients) { run_gradchecks(table()); }

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_f32, *boost::unit_test::precondition(cuda_device)) { run_cpu_vs_cuda(table()); }

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_bf16, *boost::unit_test::precondition(cuda_device)) { run_cpu_vs_cuda(table(), DType::bf16, 1e3); }

BOOST_AUTO_TEST_CASE(forward_values_match_index_loops) {
    Tape tape;
    Var x = tape.leaf(iota({2, 3, 4}));  // x[i][j][k] = 12 i + 4 j + k
    auto at = [](const Tensor& t, std::initializer_list<std::int64_t> idx) {
        std::vector<std::int64_t> i(idx);
        return static_cast<const double*>(t.raw_data())[t.linear_offset(i)];
    };
    Tensor p = permute(x, {2, 0, 1}).value();  // p[k][i][j] = x[i][j][k]
    BOOST_TEST((p.shape() == Shape{4, 2, 3}));
    for (std::int64_t i = 0; i < 2; ++i)
        for (std::int64_t j = 0; j < 3; ++j)
            for (std::int64_t k = 0; k < 4; ++k) BOOST_TEST(at(p, {k, i, j}) == double(12 * i + 4 * j + k));
    Tensor s = slice(x, 2, 1, 4, 2).value();  // k in {1, 3}
    BOOST_TEST((s.shape() == Shape{2, 3, 2}));
    for (std::int64_t i = 0; i < 2; ++i)
        for (std::int64_t j = 0; j < 3; ++j)
            for (std::int64_t k = 0; k < 2; ++k) BOOST_TEST(at(s, {i, j, k}) == double(12 * i + 4 * j + 1 + 2 * k));
    Tensor sel = select(x, 1, 2).value();
    BOOST_TEST((sel.shape() == Shape{2, 4}));
    BOOST_TEST(at(sel, {1, 3}) == 12.0 + 8.0 + 3.0);
    // reshape of the transposed view copies in the transposed order
    std::vector<double> r = reshape(transpose(x, 0, 2), {-1}).value().to_vector<double>();
    std::size_t n = 0;
    for (std::int64_t k = 0; k < 4; ++k)
        for (std::int64_t j = 0; j < 3; ++j)
            for (std::int64_t i = 0; i < 2; ++i) BOOST_TEST(r[n++] == double(12 * i + 4 * j + k));
    // expand repeats along the broadcast axes
    Var col = tape.leaf(Tensor::from(std::vector<double>{5, 7}, {2, 1}));
    BOOST_TEST(expand(col, {3, 2, 2}).value().to_vector<double>() == std::vector<double>({5, 5, 7, 7, 5, 5, 7, 7, 5, 5, 7, 7}),
               boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(views_share_storage_and_reshape_copies_only_when_needed) {
    Tape tape;
    Var x = tape.leaf(iota({3, 4}));
    BOOST_TEST(transpose(x, 0, 1).value().same_storage(x.value()));
    BOOST_TEST(narrow(x, 1, 1, 2).value().same_storage(x.value()));
    BOOST_TEST(select(x, 0, 1).value().same_storage(x.value()));
    BOOST_TEST(reshape(x, {4, 3}).value().same_storage(x.value()));
    BOOST_TEST(!reshape(transpose(x, 0, 1), {12}).value().same_storage(x.value()));
    Var c = contiguous(x);
    BOOST_TEST(c.id == x.id);  // already contiguous: no new value
}

BOOST_AUTO_TEST_CASE(slice_backward_places_the_gradient) {
    Tape tape;
    Var x = tape.leaf(Tensor::zeros({3, 4}, DType::f64));
    Var y = slice(x, 1, 1, 4, 2);  // columns 1 and 3
    tape.backward(y, Tensor::from(std::vector<double>{1, 2, 3, 4, 5, 6}, {3, 2}));
    BOOST_TEST(x.grad().to_vector<double>() == std::vector<double>({0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(copy_into_writes_only_the_view) {
    for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::i64, DType::u8}) {
        Tensor dst = Tensor::zeros({3, 4}, dt);
        Tensor view = dst.slice(1, 0, 4, 2).transpose(0, 1);  // (2, 3): columns 0 and 2
        ops::copy_into(view, Tensor::from(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3}, dt));
        BOOST_TEST_INFO(dtype_name(dt));
        BOOST_TEST(dst.to_vector<double>() == std::vector<double>({1, 0, 4, 0, 2, 0, 5, 0, 3, 0, 6, 0}), boost::test_tools::per_element());
    }
}

BOOST_AUTO_TEST_CASE(errors_name_the_operands) {
    Tensor dst = Tensor::zeros({3, 4});
    Tensor view = dst.narrow(1, 0, 2);
    BOOST_TEST(throws_naming([&] { ops::copy_into(view, Tensor::zeros({2, 3})); }, {"(2, 3)", "(3, 2)"}));
    BOOST_TEST(throws_naming([&] { ops::copy_into(view, Tensor::zeros({3, 2}, DType::f64)); }, {"float64", "float32"}));
    Tensor bcast = Tensor::zeros({1, 2}).expand({3, 2});
    BOOST_TEST(throws_naming([&] { ops::copy_into(bcast, Tensor::zeros({3, 2})); }, {"stride 0"}));
    Tape tape;
    Var x = tape.leaf(Tensor::zeros({2, 3}));
    BOOST_TEST(throws_naming([&] { reshape(x, {4}); }, {"(2, 3)", "(4,)"}));
    BOOST_TEST(throws_naming([&] { permute(x, {0, 0}); }, {"0, 0", "(2, 3)"}));
    BOOST_TEST(throws_naming([&] { permute(x, {0}); }, {"(2, 3)"}));
    BOOST_TEST(throws_naming([&] { narrow(x, 1, 2, 2); }, {"start 2", "(2, 3)"}));
    BOOST_TEST(throws_naming([&] { select(x, 0, 2); }, {"index 2", "(2, 3)"}));
    BOOST_TEST(throws_naming([&] { transpose(x, 0, 2); }, {"axis 2", "(2, 3)"}));
    BOOST_TEST(throws_naming([&] { squeeze(x, 0); }, {"(2, 3)"}));
    BOOST_TEST(throws_naming([&] { expand(x, {4, 3}); }, {"(2, 3)", "(4, 3)"}));
}
