// Uses the installed headers: a tensor, a tape, an op with its gradient, and an objective.
#include <deviant/objectives/registry.hpp>
#include <deviant/ops/softmax.hpp>

#include <cstdio>

int main() {
    using namespace deviant;
    Parameter x("x", Tensor::from(std::vector<float>{1.f, 2.f, 3.f}, {3}));
    Tape tape;
    Var y = sum_all(softmax(tape.param(x), -1) * tape.constant(Tensor::from(std::vector<float>{0.f, 0.f, 1.f}, {3})));
    tape.backward(y);
    auto g = x.grad.to_vector<double>();
    // d softmax_2 / d x = p2 (e2 - p)
    std::printf("softmax[2]=%.6f grad=[%.6f %.6f %.6f] cuda compiled=%d\n", y.value().item(), g[0], g[1], g[2], int(cuda::compiled()));
    double p2 = y.value().item();
    if (std::abs(g[2] - p2 * (1 - p2)) > 1e-6) return 1;
    AnyObjective dpo = make_objective("ddpo");
    return dpo.needs_reference && dpo.weighted ? 0 : 1;
}
