// deviant/autodiff/tape.hpp — reverse-mode automatic differentiation.
//
// A Tape records one Node per differentiable op into a block arena: a plain function pointer
// for the backward rule (no heap-allocated closure), input/output value ids, up to three saved
// tensors and a small block of plain-data attributes. backward() walks the nodes in reverse,
// accumulating gradients (a value used twice receives the sum); a Parameter's gradient goes
// straight into Parameter::grad (adopted the first time, added in place after), never held
// twice. Memory is handed back as the walk goes: once a node has run, its saved tensors, its
// output's gradient and its output's value are released (the tape is single-assignment, so no
// node left to run can read them), so the peak is at the start of backward, not the end. Read a
// value after backward only if it was retain()ed (the loss always is; leaves always are).
// Parameters live outside the tape: the tape holds only activations, so a model's weights and
// gradients outlive every step.
#pragma once
#include <array>
#include <cstring>
#include <deque>
#include <memory>
#include <unordered_map>
#include <string>
#include <type_traits>
#include <vector>

#include "deviant/core/accumulate.hpp"
#include "deviant/core/tensor.hpp"

namespace deviant {

// A trainable tensor and its gradient; gradients are *added* into `grad` by Tape::backward.
// A bfloat16 parameter's gradient is held in float32 (grad_dtype()): micro-batch gradients and
// the ranks' gradients are summed without rounding each partial sum to 8 bits of mantissa.
struct Parameter {
    std::string name;
    Tensor value;
    Tensor grad;  // allocated on first backward, of grad_dtype(); zero_grad() clears it
    bool trainable = true;

    Parameter() = default;
    Parameter(std::string n, Tensor v) : name(std::move(n)), value(std::move(v)) {}
    void zero_grad() {
        if (grad.defined()) grad.fill_(0.0);
    }
    // Drops the gradient buffer (PyTorch's set_to_none): the next backward adopts its first
    // gradient, so a step's peak memory does not hold last step's gradients.
    void release_grad() { grad = Tensor{}; }
    // The dtype of `grad`: float32 for a bfloat16 parameter, the parameter's own dtype otherwise.
    DType grad_dtype() const { return value.dtype() == DType::bf16 ? DType::f32 : value.dtype(); }
};

namespace detail {
inline bool& grad_enabled_flag() {
    static thread_local bool on = true;
    return on;
}
}  // namespace detail

inline bool grad_enabled() { return detail::grad_enabled_flag(); }

// Within this scope ops compute values but record nothing (inference, reference model).
class NoGradGuard {
public:
    NoGradGuard() : prev_(detail::grad_enabled_flag()) { detail::grad_enabled_flag() = false; }
    ~NoGradGuard() { detail::grad_enabled_flag() = prev_; }
    NoGradGuard(const NoGradGuard&) = delete;
    NoGradGuard& operator=(const NoGradGuard&) = delete;

private:
    bool prev_;
};

class Tape;

// A handle to a value recorded on a tape. Cheap to copy; valid until the tape is cleared.
struct Var {
    Tape* tape = nullptr;
    std::int32_t id = -1;

    bool defined() const { return tape != nullptr; }
    const Tensor& value() const;
    const Shape& shape() const { return value().shape(); }
    DType dtype() const { return value().dtype(); }
    Device device() const { return value().device(); }
    bool requires_grad() const;
    Tensor grad() const;  // after backward (a parameter's: its Parameter::grad; undefined if none flowed)
};

struct Node;
using BackwardFn = void (*)(Tape&, const Node&);

struct Node {
    static constexpr int max_inputs = 5;
    static constexpr int max_saved = 3;
    static constexpr std::size_t attr_bytes = 64;

    BackwardFn backward = nullptr;
    std::int32_t out = -1;
    std::array<std::int32_t, max_inputs> in{-1, -1, -1, -1, -1};
    std::uint8_t n_in = 0;
    std::array<Tensor, max_saved> saved;
    alignas(8) std::array<unsigned char, attr_bytes> attrs{};

    template <class A>
    const A& attr() const {
        static_assert(std::is_trivially_copyable_v<A> && sizeof(A) <= attr_bytes);
        return *reinterpret_cast<const A*>(attrs.data());
    }
};

struct NoAttrs {};

class Tape {
public:
    Tape() = default;
    Tape(const Tape&) = delete;
    Tape& operator=(const Tape&) = delete;

    // A leaf value; with requires_grad its gradient is kept on the tape (read it with Var::grad()).
    Var leaf(Tensor value, bool requires_grad = true) { return push_value(std::move(value), requires_grad && grad_enabled(), nullptr); }
    Var constant(Tensor value) { return push_value(std::move(value), false, nullptr); }
    // A leaf bound to a Parameter: backward adds its gradient into p.grad. One id per parameter per tape.
    Var param(Parameter& p) {
        if (auto it = param_index_.find(&p); it != param_index_.end()) return Var{this, it->second};
        Var v = push_value(p.value, p.trainable && grad_enabled(), &p);
        param_index_.emplace(&p, v.id);
        return v;
    }

    // Records an op output. When no input needs a gradient (or grad is disabled) no node is kept.
    template <class Attr = NoAttrs>
    Var record(Tensor out, std::initializer_list<Var> inputs, BackwardFn fn, std::initializer_list<Tensor> saved = {},
               const Attr& attr = {}) {
        static_assert(std::is_trivially_copyable_v<Attr> && sizeof(Attr) <= Node::attr_bytes, "op attributes must be small plain data");
        DEVIANT_REQUIRE(inputs.size() <= Node::max_inputs && saved.size() <= Node::max_saved, "op records too many inputs");
        bool needs = false;
        for (const Var& v : inputs) {
            DEVIANT_REQUIRE(v.tape == this, "op mixes values from different tapes");
            needs = needs || requires_grad_[v.id];
        }
        needs = needs && grad_enabled();
        Var y = push_value(std::move(out), needs, nullptr);
        if (!needs) return y;
        Node& n = new_node();
        n.backward = fn;
        n.out = y.id;
        n.n_in = std::uint8_t(inputs.size());
        int k = 0;
        for (const Var& v : inputs) n.in[k++] = v.id;
        k = 0;
        for (const Tensor& s : saved) n.saved[k++] = s;
        std::memcpy(n.attrs.data(), &attr, sizeof(Attr));
        return y;
    }

    const Tensor& value(std::int32_t id) const {
        DEVIANT_REQUIRE(values_[id].defined(), "value #{} was released by backward (retain() it before backward to read it after)", id);
        return values_[id];
    }
    // Keeps an op output's value readable after backward (metrics read after the step, tests).
    void retain(Var v) {
        DEVIANT_REQUIRE(v.tape == this, "retain() of a value of another tape");
        retained_[v.id] = true;
    }
    const Tensor& grad(std::int32_t id) const { return params_[id] ? params_[id]->grad : grads_[id]; }
    bool requires_grad(std::int32_t id) const { return requires_grad_[id]; }
    // The dtype value `id`'s gradient is kept in: a parameter's grad_dtype() (float32 for bf16),
    // else the value's own. A backward rule that can produce it directly (a bf16 product's float32
    // accumulators) saves the widening and the rounding.
    DType grad_dtype(std::int32_t id) const { return params_[id] ? params_[id]->grad_dtype() : values_[id].dtype(); }
    std::size_t num_nodes() const { return n_nodes_; }
    std::size_t num_values() const { return values_.size(); }

    // Called by backward rules: adds `g` to the gradient of value `id` (ignored if it needs none).
    // `g` must be a fresh tensor the caller does not keep (the first one is adopted, not copied).
    // A parameter's gradient is kept in its grad_dtype() (a bf16 gradient is widened to float32).
    void accumulate(std::int32_t id, Tensor g) {
        if (!requires_grad_[id]) return;
        const Tensor& v = values_[id];
        DEVIANT_REQUIRE(g.shape() == v.shape(), "backward produced gradient {} for value {}", g.shape().str(), v.shape().str());
        Parameter* p = params_[id];
        Tensor& into = p ? p->grad : grads_[id];
        const DType want = p ? p->grad_dtype() : g.dtype();
        if (into.defined()) add_into(into, g);
        else if (g.dtype() != want) into = g.to(want);
        else into = g.is_contiguous() ? std::move(g) : g.contiguous();
    }
    // For a backward rule that adds its gradient in place (a scatter into a few rows of a large
    // table): add(buffer) adds into the gradient of value `id`, made zeroed in grad_dtype(id) on
    // first use (ignored if the value needs no gradient).
    template <class Add>
    void accumulate_in_place(std::int32_t id, Add&& add) {
        if (!requires_grad_[id]) return;
        Tensor& into = params_[id] ? params_[id]->grad : grads_[id];
        if (!into.defined()) into = Tensor::zeros(values_[id].shape(), grad_dtype(id), values_[id].device());
        else if (!into.is_contiguous()) into = into.contiguous();
        add(into);
    }
    // Gradient flowing into an input slot of a node, or undefined when that input needs none.
    bool needs_grad(const Node& n, int slot) const { return requires_grad_[n.in[slot]]; }

    // Reverse pass from a scalar (seed 1), then parameter gradients are added and the graph released.
    void backward(Var loss) {
        DEVIANT_REQUIRE(loss.tape == this, "backward on a value of another tape");
        DEVIANT_REQUIRE(loss.value().numel() == 1, "backward() needs a scalar, got {}", loss.shape().str());
        backward(loss, Tensor::ones(loss.shape(), loss.dtype(), loss.device()));
    }
    void backward(Var out, Tensor seed) {
        DEVIANT_REQUIRE(seed.shape() == out.shape(), "backward seed {} for output {}", seed.shape().str(), out.shape().str());
        DEVIANT_REQUIRE(requires_grad_[out.id], "backward from a value that does not depend on any parameter");
        grads_[out.id] = std::move(seed);
        retained_[out.id] = true;
        for (std::size_t i = n_nodes_; i-- > 0;) {
            Node& n = node(i);
            if (grads_[n.out].defined()) n.backward(*this, n);
            // the node has run and every node that reads its output (recorded later) ran before
            // it: its saved tensors, its output's gradient and (unless retained) its output's
            // value are no longer needed. Leaves (and so parameters) keep theirs.
            n.saved = {};
            if (n.out != out.id) grads_[n.out] = Tensor{};
            if (!retained_[n.out]) values_[n.out] = Tensor{};
        }
        clear_graph();
    }

    // Drops nodes and saved tensors but keeps values and leaf gradients readable.
    void clear_graph() {
        for (std::size_t i = 0; i < n_nodes_; ++i) node(i) = Node{};
        n_nodes_ = 0;
    }
    // Drops everything recorded; Vars from before are invalid afterwards.
    void clear() {
        clear_graph();
        values_.clear();
        grads_.clear();
        requires_grad_.clear();
        retained_.clear();
        params_.clear();
        param_index_.clear();
    }

private:
    static constexpr std::size_t block_size = 256;

    Var push_value(Tensor t, bool rg, Parameter* p) {
        values_.push_back(std::move(t));
        grads_.emplace_back();
        requires_grad_.push_back(rg);
        retained_.push_back(false);
        params_.push_back(p);
        return Var{this, std::int32_t(values_.size() - 1)};
    }
    Node& node(std::size_t i) { return blocks_[i / block_size][i % block_size]; }
    Node& new_node() {
        if (n_nodes_ == blocks_.size() * block_size) blocks_.push_back(std::make_unique<Node[]>(block_size));
        return node(n_nodes_++);
    }

    std::vector<std::unique_ptr<Node[]>> blocks_;  // the node arena: blocks are reused across steps
    std::size_t n_nodes_ = 0;
    std::deque<Tensor> values_, grads_;  // a deque: references handed out by value() stay valid as ops record
    std::vector<bool> requires_grad_, retained_;
    std::vector<Parameter*> params_;
    std::unordered_map<const Parameter*, std::int32_t> param_index_;
};

inline const Tensor& Var::value() const { return tape->value(id); }
inline bool Var::requires_grad() const { return tape->requires_grad(id); }
inline Tensor Var::grad() const { return tape->grad(id); }

// The gradient arriving at a node's output, for use inside backward rules.
inline const Tensor& output_grad(const Tape& t, const Node& n) { return t.grad(n.out); }

}  // namespace deviant
