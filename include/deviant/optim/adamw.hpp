// deviant/optim/adamw.hpp — AdamW with decoupled weight decay, exactly as torch.optim.AdamW.
// Why: the trainer updates a model's Parameters (float32, bfloat16 or float64) from their
// gradients. State (exp_avg m, exp_avg_sq v) is float32 for float32 and bfloat16 parameters
// and float64 for float64 parameters. Mixed precision: a bfloat16 parameter also gets a float32
// master copy (AdamWOptions::master_weights, on by default); the update runs on the master and
// the bf16 weight is its round-to-nearest-even image, so updates far below the weight's bf16
// spacing (lr 1e-5 on a weight of 0.02 moves it by 1/400 of an ulp) accumulate instead of being
// rounded away. Without masters the bf16 weight itself is updated in fp32 math and rounded back.
// A bf16 parameter's gradient is float32 (Parameter::grad_dtype) or bf16. Each parameter keeps its
// own step count, so a parameter that received no gradient in a step is skipped and keeps its bias
// correction, as in torch.
// state_tensors()/load_state() move the state in and out of a checkpoint under the names
// "<param>.exp_avg", "<param>.exp_avg_sq", "<param>.step", "<param>.master" (bf16 parameters
// with master weights) and "step" (the optimizer's count).
// CPU loop here; the CUDA kernel (one launch per parameter) is in kernels/adamw.cuh.
#pragma once
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "deviant/autodiff/tape.hpp"
#include "deviant/core/thread_pool.hpp"
#include "deviant/io/safetensors.hpp"
#include "deviant/optim/adamw_math.hpp"

namespace deviant::kernels {
// One AdamW update of a contiguous parameter (f32/bf16 with f32 state, or f64 with f64 state);
// grad has the parameter's dtype and shape. The optimizer uses it for float64 parameters.
DEVIANT_CUDA_LAUNCHER(adamw_step, const TensorRef& param, const TensorRef& grad, const TensorRef& exp_avg,
                      const TensorRef& exp_avg_sq, const optim::AdamWCoefficients& c)
// The same update for `count` float32-state parameters (f32, or bf16 with an optional master) in few launches.
DEVIANT_CUDA_LAUNCHER(adamw_step_many, const optim::AdamWTensorF32* tensors, std::int64_t count)
}  // namespace deviant::kernels

namespace deviant::optim {

struct AdamWOptions {
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
    bool master_weights = true;  // bfloat16 parameters keep a float32 master copy
};

// The dtype AdamW keeps its moments in for a parameter of dtype `t`.
inline DType adamw_state_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

class AdamW {
public:
    // Non-trainable parameters are left out. Every parameter must be floating, named, and given once.
    explicit AdamW(const std::vector<Parameter*>& params, AdamWOptions options = {}) : options_(options) {
        DEVIANT_REQUIRE(options.beta1 >= 0 && options.beta1 < 1, "AdamW: beta1 {} is outside [0, 1)", options.beta1);
        DEVIANT_REQUIRE(options.beta2 >= 0 && options.beta2 < 1, "AdamW: beta2 {} is outside [0, 1)", options.beta2);
        DEVIANT_REQUIRE(options.eps >= 0 && std::isfinite(options.eps), "AdamW: eps {} must be finite and >= 0", options.eps);
        DEVIANT_REQUIRE(options.weight_decay >= 0 && std::isfinite(options.weight_decay),
                        "AdamW: weight_decay {} must be finite and >= 0", options.weight_decay);
        std::set<const Parameter*> seen;
        std::set<std::string> names;
        for (std::size_t i = 0; i < params.size(); ++i) {
            Parameter* p = params[i];
            DEVIANT_REQUIRE(p != nullptr, "AdamW: parameter {} of {} is null", i, params.size());
            if (!p->trainable) continue;
            DEVIANT_REQUIRE(seen.insert(p).second, "AdamW: parameter '{}' is given more than once", p->name);
            DEVIANT_REQUIRE(!p->name.empty(), "AdamW: parameter {} has no name (state is saved by name)", i);
            DEVIANT_REQUIRE(names.insert(p->name).second, "AdamW: two different parameters are named '{}'", p->name);
            DEVIANT_REQUIRE(p->value.defined() && is_floating(p->value.dtype()), "AdamW: parameter '{}' must be a floating tensor, got {}",
                            p->name, p->value.defined() ? p->value.describe() : std::string("an undefined tensor"));
            DType sd = adamw_state_dtype(p->value.dtype());
            slots_.push_back(Slot{p, Tensor::zeros(p->value.shape(), sd, p->value.device()),
                                  Tensor::zeros(p->value.shape(), sd, p->value.device()), 0, initial_master(*p)});
        }
    }

    // Whether bf16 parameter `p` keeps a float32 master copy under these options.
    bool keeps_master(const Parameter& p) const { return options_.master_weights && p.value.dtype() == DType::bf16; }

    // Re-reads every master copy from its (bf16) parameter: call after changing weights from outside
    // the optimizer (loading a checkpoint without optimizer state, merging adapters).
    void refresh_masters() {
        for (auto& s : slots_)
            if (s.master.defined()) s.master = initial_master(*s.param);
    }
    // The float32 master copy of parameter `p`, or an undefined tensor when it has none.
    const Tensor& master_of(const Parameter& p) const {
        static const Tensor none;
        for (const auto& s : slots_)
            if (s.param == &p) return s.master;
        return none;
    }

    const AdamWOptions& options() const { return options_; }
    // Number of step() calls (including restored ones).
    std::int64_t steps() const { return steps_; }
    // The trainable parameters this optimizer updates, in order.
    std::vector<Parameter*> parameters() const {
        std::vector<Parameter*> out;
        for (const auto& s : slots_) out.push_back(s.param);
        return out;
    }

    // One update with learning rate `lr`; parameters without a gradient are skipped.
    void step(double lr) {
        DEVIANT_REQUIRE(std::isfinite(lr) && lr >= 0, "AdamW: learning rate {} must be finite and >= 0", lr);
        std::vector<AdamWTensorF32> batch;  // CUDA float32-state parameters: one multi-tensor update
        std::vector<Tensor> keep;
        for (auto& s : slots_) {
            Parameter& p = *s.param;
            if (!p.grad.defined()) continue;
            DEVIANT_REQUIRE(p.grad.shape() == p.value.shape(), "AdamW: parameter '{}' has shape {} but its gradient {}", p.name,
                            p.value.shape().str(), p.grad.shape().str());
            DEVIANT_REQUIRE(p.grad.device() == p.value.device(), "AdamW: parameter '{}' is on {} but its gradient on {}", p.name,
                            device_name(p.value.device()), device_name(p.grad.device()));
            DEVIANT_REQUIRE(p.value.is_contiguous(), "AdamW: parameter '{}' is not contiguous ({})", p.name, p.value.describe());
            if (s.exp_avg.device() != p.value.device()) {  // the parameter moved since the state was made
                s.exp_avg = s.exp_avg.to(p.value.device());
                s.exp_avg_sq = s.exp_avg_sq.to(p.value.device());
                if (s.master.defined()) s.master = s.master.to(p.value.device());
            }
            // a bf16 parameter's gradient is float32 (Parameter::grad_dtype) or bf16; anything else is converted
            const bool grad_ok = p.grad.dtype() == p.value.dtype() || p.grad.dtype() == p.grad_dtype();
            Tensor g = grad_ok ? p.grad.contiguous() : p.grad.to(p.grad_dtype()).contiguous();
            s.step += 1;
            AdamWCoefficients c = coefficients(lr, s.step);
            if (p.value.device() == Device::cuda && p.value.dtype() != DType::f64) {
                batch.push_back(table_entry(s, g, c));
                keep.push_back(std::move(g));  // a converted gradient lives until the launch
            } else if (p.value.device() == Device::cuda) {
                kernels::adamw_step(p.value.ref(), g.ref(), s.exp_avg.ref(), s.exp_avg_sq.ref(), c);
            } else {
                cpu_step(p.value, g, s.exp_avg, s.exp_avg_sq, c, s.master.defined() ? &s.master : nullptr);
            }
        }
        if (!batch.empty()) kernels::adamw_step_many(batch.data(), std::int64_t(batch.size()));
        steps_ += 1;
    }

    // Zeroes every gradient (keeping the buffers, so a parameter stays "with a gradient").
    void zero_grad() {
        for (auto& s : slots_) s.param->zero_grad();
    }

    // The state by checkpoint name. Moment tensors share storage with the optimizer (no copy).
    std::vector<std::pair<std::string, Tensor>> state_tensors() const {
        std::vector<std::pair<std::string, Tensor>> out;
        out.reserve(slots_.size() * 3 + 1);
        for (const auto& s : slots_) {
            out.emplace_back(s.param->name + ".exp_avg", s.exp_avg);
            out.emplace_back(s.param->name + ".exp_avg_sq", s.exp_avg_sq);
            out.emplace_back(s.param->name + ".step", Tensor::from(std::vector<std::int64_t>{s.step}, {1}));
            if (s.master.defined()) out.emplace_back(s.param->name + ".master", s.master);
        }
        out.emplace_back("step", Tensor::from(std::vector<std::int64_t>{steps_}, {1}));
        return out;
    }

    // Restores state written by state_tensors(). Every name must be present with the parameter's
    // shape, and no unknown name may appear; on any error the optimizer is left unchanged. A master
    // copy is optional (state saved without master weights): when absent it is re-read from the
    // parameter, so load the weights before the optimizer state.
    void load_state(const std::vector<std::pair<std::string, Tensor>>& named, const std::string& where = "optimizer state") {
        std::map<std::string, const Tensor*> by_name;
        for (const auto& [name, t] : named) {
            DEVIANT_REQUIRE(by_name.emplace(name, &t).second, "{}: tensor '{}' appears twice", where, name);
            DEVIANT_REQUIRE(t.defined(), "{}: tensor '{}' is undefined", where, name);
        }
        auto find = [&](const std::string& name, const Shape& shape) -> const Tensor& {
            auto it = by_name.find(name);
            DEVIANT_REQUIRE(it != by_name.end(), "{}: missing tensor '{}'", where, name);
            DEVIANT_REQUIRE(it->second->shape() == shape, "{}: tensor '{}' has shape {}, expected {}", where, name,
                            it->second->shape().str(), shape.str());
            return *it->second;
        };
        auto count = [&](const std::string& name) -> std::int64_t {
            const Tensor& t = find(name, Shape{1});
            DEVIANT_REQUIRE(t.dtype() == DType::i64, "{}: tensor '{}' must be int64, got {}", where, name, dtype_name(t.dtype()));
            std::int64_t v = t.to_vector<std::int64_t>()[0];
            DEVIANT_REQUIRE(v >= 0, "{}: tensor '{}' holds a negative step count {}", where, name, v);
            return v;
        };
        auto floating = [&](const std::string& name, const Shape& shape) -> const Tensor& {
            const Tensor& t = find(name, shape);
            DEVIANT_REQUIRE(is_floating(t.dtype()), "{}: tensor '{}' must be floating, got {}", where, name, dtype_name(t.dtype()));
            return t;
        };
        std::vector<Slot> restored = slots_;
        std::set<std::string> used{"step"};
        std::int64_t total = count("step");
        for (auto& s : restored) {
            const std::string& n = s.param->name;
            const Shape& shape = s.param->value.shape();
            DType sd = adamw_state_dtype(s.param->value.dtype());
            Device dev = s.param->value.device();
            s.exp_avg = floating(n + ".exp_avg", shape).to(dev, sd, /*force_copy=*/true);
            s.exp_avg_sq = floating(n + ".exp_avg_sq", shape).to(dev, sd, /*force_copy=*/true);
            s.step = count(n + ".step");
            used.insert({n + ".exp_avg", n + ".exp_avg_sq", n + ".step"});
            if (s.master.defined()) {
                if (by_name.count(n + ".master")) {
                    s.master = floating(n + ".master", shape).to(dev, DType::f32, /*force_copy=*/true);
                    used.insert(n + ".master");
                } else {
                    s.master = initial_master(*s.param);
                }
            }
        }
        for (const auto& [name, t] : by_name)
            DEVIANT_REQUIRE(used.count(name), "{}: tensor '{}' names no state of this optimizer (its parameters differ)", where, name);
        slots_ = std::move(restored);
        steps_ = total;
    }
    void load_state(const io::SafetensorsFile& file) { load_state(read_all(file), file.path().string()); }
    void load_state(const io::CheckpointReader& reader) {
        std::vector<std::pair<std::string, Tensor>> named;
        for (const auto& name : reader.names()) named.emplace_back(name, reader.load(name, stored_dtype(reader.info(name))));
        load_state(named, named.empty() ? std::string("optimizer checkpoint") : reader.file_of(named.front().first).string());
    }

    // The CPU update (public so tests and the CUDA comparison can name it).
    // With `master` (a float32 tensor for a bf16 parameter) the update runs on the master copy.
    // The gradient is of the parameter's dtype or, for a bf16 parameter, float32.
    static void cpu_step(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq, const AdamWCoefficients& c,
                         Tensor* master = nullptr) {
        DEVIANT_REQUIRE(grad.dtype() == param.dtype() || (param.dtype() == DType::bf16 && grad.dtype() == DType::f32),
                        "AdamW: gradient {} for parameter {}", grad.describe(), param.describe());
        if (master) {
            DEVIANT_REQUIRE(param.dtype() == DType::bf16 && master->dtype() == DType::f32 && master->numel() == param.numel(),
                            "AdamW: a master copy must be float32 for a bfloat16 parameter, got {} for {}", master->describe(),
                            param.describe());
            DEVIANT_DISPATCH_FLOAT(grad.dtype(), G, [&] {
                bf16* p = param.data<bf16>();
                const G* g = grad.data<G>();
                float *mw = master->data<float>(), *m = exp_avg.data<float>(), *v = exp_avg_sq.data<float>();
                for_ranges(param.numel(), [&](std::int64_t i0, std::int64_t i1) { update_range<float>(p, g, m, v, mw, c, i0, i1); });
            });
            return;
        }
        DEVIANT_DISPATCH_FLOAT(param.dtype(), T, [&] {
            DEVIANT_DISPATCH_FLOAT(grad.dtype(), G, [&] {
                using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
                if constexpr (std::is_same_v<T, G> || (std::is_same_v<T, bf16> && std::is_same_v<G, float>)) {
                    T* p = param.data<T>();
                    const G* g = grad.data<G>();
                    S *m = exp_avg.data<S>(), *v = exp_avg_sq.data<S>();
                    for_ranges(param.numel(), [&](std::int64_t i0, std::int64_t i1) { update_range<S>(p, g, m, v, nullptr, c, i0, i1); });
                }
            });
        });
    }

    // The scalars of an update at learning rate `lr` for a parameter on its `step`-th update (1-based).
    AdamWCoefficients coefficients(double lr, std::int64_t step) const {
        AdamWCoefficients c;
        c.decay = 1.0 - lr * options_.weight_decay;
        c.one_minus_beta1 = 1.0 - options_.beta1;
        c.beta2 = options_.beta2;
        c.one_minus_beta2 = 1.0 - options_.beta2;
        c.neg_step_size = -lr / (1.0 - std::pow(options_.beta1, double(step)));
        c.bias_correction2_sqrt = std::sqrt(1.0 - std::pow(options_.beta2, double(step)));
        c.eps = options_.eps;
        return c;
    }

private:
    // f(i0, i1) over [0, n) on the thread pool when n is large enough to pay for it. Every element's
    // update is independent of the others, so the split does not change any result.
    template <class F>
    static void for_ranges(std::int64_t n, F&& f) {
        if (n >= (std::int64_t(1) << 16)) parallel_for(n, f);
        else f(std::int64_t(0), n);
    }

    // The update of elements [i0, i1) in the compute type S, on the master copy when there is one.
    // Everything the loop reads is an argument or a local (not a lambda's captured reference, which
    // a store through p, m or v might alias as far as the compiler knows): the loop vectorises.
    template <class S, class T, class G>
    static void update_range(T* p, const G* g, S* m, S* v, float* master, const AdamWCoefficients& c, std::int64_t i0, std::int64_t i1) {
        const S decay = S(c.decay), w1 = S(c.one_minus_beta1), b2 = S(c.beta2), w2 = S(c.one_minus_beta2), step = S(c.neg_step_size),
                bc2 = S(c.bias_correction2_sqrt), eps = S(c.eps);
        if constexpr (std::is_same_v<S, float>) {
            if (master) {
                for (std::int64_t i = i0; i < i1; ++i) {
                    adamw_update<float>(master[i], float(load(g[i])), m[i], v[i], decay, w1, b2, w2, step, bc2, eps);
                    p[i] = store<T>(master[i]);
                }
                return;
            }
        }
        for (std::int64_t i = i0; i < i1; ++i) {
            S pi = S(load(p[i]));
            adamw_update<S>(pi, S(load(g[i])), m[i], v[i], decay, w1, b2, w2, step, bc2, eps);
            p[i] = store<T>(pi);
        }
    }

    struct Slot {
        Parameter* param = nullptr;
        Tensor exp_avg, exp_avg_sq;
        std::int64_t step = 0;
        Tensor master;  // float32 master copy of a bf16 parameter, or undefined
    };

    static AdamWTensorF32 table_entry(Slot& s, const Tensor& g, const AdamWCoefficients& c) {
        AdamWTensorF32 e;
        e.param = s.param->value.raw_data();
        e.grad = g.raw_data();
        e.exp_avg = static_cast<float*>(s.exp_avg.raw_data());  // device pointers: not data<T>(), which is host-only
        e.exp_avg_sq = static_cast<float*>(s.exp_avg_sq.raw_data());
        e.master = s.master.defined() ? static_cast<float*>(s.master.raw_data()) : nullptr;
        e.n = s.param->value.numel();
        e.bf16 = s.param->value.dtype() == DType::bf16;
        e.grad_bf16 = g.dtype() == DType::bf16;
        e.decay = float(c.decay), e.one_minus_beta1 = float(c.one_minus_beta1), e.beta2 = float(c.beta2);
        e.one_minus_beta2 = float(c.one_minus_beta2), e.neg_step_size = float(c.neg_step_size);
        e.bias_correction2_sqrt = float(c.bias_correction2_sqrt), e.eps = float(c.eps);
        return e;
    }

    Tensor initial_master(const Parameter& p) const {
        return keeps_master(p) ? p.value.to(p.value.device(), DType::f32, /*force_copy=*/true) : Tensor{};
    }

    static DType stored_dtype(const io::TensorInfo& info) {
        auto d = io::native_dtype(info.stored);
        return d ? *d : DType::f32;
    }
    static std::vector<std::pair<std::string, Tensor>> read_all(const io::SafetensorsFile& file) {
        std::vector<std::pair<std::string, Tensor>> named;
        for (const auto& name : file.names()) named.emplace_back(name, file.load(name, stored_dtype(file.info(name))));
        return named;
    }

    AdamWOptions options_;
    std::vector<Slot> slots_;
    std::int64_t steps_ = 0;
};

}  // namespace deviant::optim
