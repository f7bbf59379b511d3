// deviant/nn/parameter_store.hpp — the model's Parameters, by checkpoint tensor name.
// Layers ask the store for their tensors with the shape they expect; the store either loads
// them through a ParameterSource (a checkpoint) — checking the shape and naming both on a
// mismatch — or initialises them (normal(0, 0.02) for matrices, ones for norm scales, zeros for
// biases, as Hugging Face initialises fresh models). Parameters have stable addresses.
#pragma once
#include <deque>
#include <functional>
#include <optional>
#include <random>
#include <unordered_map>

#include "deviant/autodiff/tape.hpp"

namespace deviant {

enum class Init { normal, ones, zeros };

// Loads a tensor by name; returns nullopt when the checkpoint lacks it.
using ParameterSource = std::function<std::optional<Tensor>(const std::string& name)>;

class ParameterStore {
public:
    explicit ParameterStore(DType dtype = DType::f32, std::uint64_t seed = 0) : dtype_(dtype), rng_(seed) {}
    ParameterStore(const ParameterStore&) = delete;
    ParameterStore& operator=(const ParameterStore&) = delete;

    void set_source(ParameterSource src) { source_ = std::move(src); }
    DType dtype() const { return dtype_; }

    // The parameter `name` of `shape`: created on first request, shared on later ones (tied weights).
    Parameter& get(const std::string& name, const Shape& shape, Init init = Init::normal) {
        if (auto it = index_.find(name); it != index_.end()) {
            Parameter& p = params_[it->second];
            DEVIANT_REQUIRE(p.value.shape() == shape, "parameter {} requested as {} but has shape {}", name, shape.str(), p.value.shape().str());
            return p;
        }
        Tensor value;
        if (source_) {
            std::optional<Tensor> t = source_(name);
            DEVIANT_REQUIRE(t.has_value(), "checkpoint has no tensor named {}", name);
            DEVIANT_REQUIRE(t->shape() == shape, "checkpoint tensor {} has shape {}, the model expects {}", name, t->shape().str(), shape.str());
            value = t->to(Device::cpu, dtype_, /*force_copy=*/true);
        } else {
            value = initial(shape, init);
        }
        index_[name] = params_.size();
        params_.emplace_back(name, std::move(value));
        return params_.back();
    }
    // A parameter that the checkpoint may lack (a new head on a pretrained body): `value` is the
    // checkpoint's tensor or a fresh one from fresh(); the name must be new.
    Parameter& add(const std::string& name, Tensor value) {
        DEVIANT_REQUIRE(!index_.count(name), "parameter {} already exists", name);
        index_[name] = params_.size();
        params_.emplace_back(name, value.to(Device::cpu, dtype_, /*force_copy=*/true));
        return params_.back();
    }
    // A freshly initialised tensor of `shape` from this store's generator and dtype.
    Tensor fresh(const Shape& shape, Init init = Init::normal) { return initial(shape, init); }
    bool contains(const std::string& name) const { return index_.count(name) > 0; }
    Parameter& at(const std::string& name) {
        auto it = index_.find(name);
        DEVIANT_REQUIRE(it != index_.end(), "model has no parameter named {}", name);
        return params_[it->second];
    }

    std::deque<Parameter>& parameters() { return params_; }
    const std::deque<Parameter>& parameters() const { return params_; }
    std::int64_t count() const {
        std::int64_t n = 0;
        for (const auto& p : params_) n += p.value.numel();
        return n;
    }
    void zero_grad() {
        for (auto& p : params_) p.zero_grad();
    }
    // Moves every parameter (and gradient) to `device`.
    void to(Device device) {
        for (auto& p : params_) {
            p.value = p.value.to(device);
            if (p.grad.defined()) p.grad = p.grad.to(device);
        }
    }

private:
    Tensor initial(const Shape& shape, Init init) {
        if (init == Init::ones) return Tensor::ones(shape, dtype_);
        if (init == Init::zeros) return Tensor::zeros(shape, dtype_);
        std::normal_distribution<double> nd(0.0, 0.02);
        std::vector<double> v(std::size_t(shape.numel()));
        for (auto& x : v) x = nd(rng_);
        return Tensor::from(v, shape, dtype_);
    }

    DType dtype_;
    std::mt19937_64 rng_;
    ParameterSource source_;
    std::deque<Parameter> params_;
    std::unordered_map<std::string, std::size_t> index_;
};

}  // namespace deviant
