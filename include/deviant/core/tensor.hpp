// deviant/core/tensor.hpp — Tensor: shape, strides and dtype over shared Storage on the CPU or
// a CUDA device. Views (reshape, transpose, permute, slice, narrow, expand, squeeze) share the
// storage and copy nothing; contiguous(), to(Device) and to(DType) copy when they must.
#pragma once
#include <memory>
#include <span>
#include <vector>

#include "deviant/core/allocator.hpp"
#include "deviant/core/dtype.hpp"
#include "deviant/core/shape.hpp"
#include "deviant/core/tensor_ref.hpp"
#include "deviant/kernels/api.hpp"

namespace deviant {

class Tensor {
public:
    Tensor() = default;

    // --- construction ---
    static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu) {
        for (auto d : shape) DEVIANT_REQUIRE(d >= 0, "negative extent in shape {}", shape.str());
        Tensor t;
        t.storage_ = std::make_shared<Storage>(std::size_t(shape.numel()) * dtype_size(dtype), device);
        t.shape_ = shape;
        t.strides_ = shape.contiguous_strides();
        t.dtype_ = dtype;
        return t;
    }
    static Tensor full(const Shape& shape, double value, DType dtype = DType::f32, Device device = Device::cpu) {
        Tensor t = empty(shape, dtype, device);
        t.fill_(value);
        return t;
    }
    static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu) {
        return full(shape, 0.0, dtype, device);
    }
    static Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu) {
        return full(shape, 1.0, dtype, device);
    }
    // Host values converted to `dtype` (on the CPU), shape checked against the value count.
    template <class V>
    static Tensor from(std::span<const V> values, const Shape& shape, DType dtype = dtype_of<V>()) {
        DEVIANT_REQUIRE(std::int64_t(values.size()) == shape.numel(), "{} values do not fill shape {}",
                        values.size(), shape.str());
        Tensor t = empty(shape, dtype_of<V>());
        if (!values.empty()) std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(V));  // empty spans may hold null
        return dtype == dtype_of<V>() ? t : t.to(dtype);
    }
    template <class V>
    static Tensor from(const std::vector<V>& values, const Shape& shape, DType dtype = dtype_of<V>()) {
        return from(std::span<const V>(values), shape, dtype);
    }
    // Wraps externally owned CPU memory (e.g. a memory-mapped checkpoint) without copying.
    static Tensor borrow(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> owner) {
        Tensor t;
        t.storage_ = std::make_shared<Storage>(data, std::size_t(shape.numel()) * dtype_size(dtype), std::move(owner));
        t.shape_ = shape;
        t.strides_ = shape.contiguous_strides();
        t.dtype_ = dtype;
        return t;
    }

    // --- properties ---
    bool defined() const { return storage_ != nullptr; }
    const Shape& shape() const { return shape_; }
    const Shape& strides() const { return strides_; }
    std::int64_t size(int axis) const { return shape_[axis]; }
    int rank() const { return shape_.rank(); }
    std::int64_t numel() const { return shape_.numel(); }
    DType dtype() const { return dtype_; }
    Device device() const { return storage_ ? storage_->device() : Device::cpu; }
    std::int64_t offset() const { return offset_; }
    bool is_contiguous() const { return ref().contiguous(); }
    bool same_storage(const Tensor& o) const { return storage_ == o.storage_; }

    void* raw_data() const {
        return static_cast<char*>(storage_->data()) + offset_ * std::int64_t(dtype_size(dtype_));
    }
    // Typed CPU pointer; checks the dtype and device so that a wrong cast or a host loop over device
    // memory is an error, not garbage or a crash. Kernel launchers take ref() / raw_data() instead.
    template <class T>
    T* data() const {
        DEVIANT_REQUIRE(defined(), "tensor is undefined");
        DEVIANT_REQUIRE(device() == Device::cpu, "tensor {} is on {}: data<T>() gives host pointers (copy it with .to(Device::cpu))",
                        describe(), device_name(device()));
        DEVIANT_REQUIRE(dtype_of<T>() == dtype_, "tensor holds {}, accessed as {}", dtype_name(dtype_),
                        dtype_name(dtype_of<T>()));
        return static_cast<T*>(raw_data());
    }
    TensorRef ref() const {
        TensorRef r;
        r.data = storage_ ? raw_data() : nullptr;
        r.dtype = dtype_;
        r.rank = shape_.rank();
        for (int i = 0; i < r.rank; ++i) r.shape[i] = shape_[i], r.strides[i] = strides_[i];
        return r;
    }
    std::string describe() const {
        return fmt::format("{} {} on {}", shape_.str(), dtype_name(dtype_), device_name(device()));
    }

    // --- element access (CPU, any layout; for tests and small host work) ---
    std::int64_t linear_offset(std::span<const std::int64_t> idx) const {
        DEVIANT_REQUIRE(int(idx.size()) == rank(), "index of rank {} for tensor {}", idx.size(), shape_.str());
        std::int64_t o = 0;
        for (int i = 0; i < rank(); ++i) {
            DEVIANT_REQUIRE(idx[i] >= 0 && idx[i] < shape_[i], "index {} out of range for axis {} of {}", idx[i], i,
                            shape_.str());
            o += idx[i] * strides_[i];
        }
        return o;
    }
    double item() const {
        DEVIANT_REQUIRE(numel() == 1, "item() needs one element, tensor is {}", shape_.str());
        return to_vector<double>()[0];
    }
    // All elements in row-major order, converted to V (copies from the device if needed).
    template <class V>
    std::vector<V> to_vector() const {
        Tensor c = to(Device::cpu).contiguous();
        std::vector<V> out(std::size_t(c.numel()));
        switch (c.dtype()) {
            case DType::f32: for (std::size_t i = 0; i < out.size(); ++i) out[i] = V(c.data<float>()[i]); break;
            case DType::f64: for (std::size_t i = 0; i < out.size(); ++i) out[i] = V(c.data<double>()[i]); break;
            case DType::bf16: for (std::size_t i = 0; i < out.size(); ++i) out[i] = V(float(c.data<bf16>()[i])); break;
            case DType::i64: for (std::size_t i = 0; i < out.size(); ++i) out[i] = V(c.data<std::int64_t>()[i]); break;
            case DType::u8: for (std::size_t i = 0; i < out.size(); ++i) out[i] = V(c.data<std::uint8_t>()[i]); break;
        }
        return out;
    }

    // --- views: no copy ---
    Tensor view(const Shape& shape) const {
        DEVIANT_REQUIRE(is_contiguous(), "view {} of non-contiguous tensor {}", shape.str(), describe());
        Tensor t = *this;
        t.shape_ = resolve_shape(shape);
        t.strides_ = t.shape_.contiguous_strides();
        return t;
    }
    // Like view, but copies first when the layout does not allow a view.
    Tensor reshape(const Shape& shape) const { return is_contiguous() ? view(shape) : contiguous().view(shape); }
    Tensor transpose(int a, int b) const {
        Tensor t = *this;
        a = shape_.normalize(a), b = shape_.normalize(b);
        std::swap(t.shape_[a], t.shape_[b]);
        std::swap(t.strides_[a], t.strides_[b]);
        return t;
    }
    Tensor permute(std::span<const int> order) const {
        DEVIANT_REQUIRE(int(order.size()) == rank(), "permute of rank {} for tensor {}", order.size(), shape_.str());
        Tensor t = *this;
        for (int i = 0; i < rank(); ++i) {
            int o = shape_.normalize(order[i]);
            t.shape_[i] = shape_[o];
            t.strides_[i] = strides_[o];
        }
        return t;
    }
    Tensor permute(std::initializer_list<int> order) const { return permute(std::span<const int>(order.begin(), order.size())); }
    // Elements [start, end) along `axis`, every `step`-th.
    Tensor slice(int axis, std::int64_t start, std::int64_t end, std::int64_t step = 1) const {
        axis = shape_.normalize(axis);
        std::int64_t n = shape_[axis];
        if (start < 0) start += n;
        if (end < 0) end += n;
        DEVIANT_REQUIRE(step > 0 && start >= 0 && start <= end && end <= n, "slice [{}, {}) step {} out of range for axis {} of {}",
                        start, end, step, axis, shape_.str());
        Tensor t = *this;
        t.offset_ += start * strides_[axis];
        t.shape_[axis] = (end - start + step - 1) / step;
        t.strides_[axis] *= step;
        return t;
    }
    Tensor narrow(int axis, std::int64_t start, std::int64_t length) const { return slice(axis, start, start + length); }
    Tensor select(int axis, std::int64_t index) const {
        axis = shape_.normalize(axis);
        Tensor t = narrow(axis, index, 1);
        t.shape_.erase(axis);
        t.strides_.erase(axis);
        return t;
    }
    Tensor unsqueeze(int axis) const {
        if (axis < 0) axis += rank() + 1;
        DEVIANT_REQUIRE(axis >= 0 && axis <= rank(), "unsqueeze axis {} for {}", axis, shape_.str());
        Tensor t = *this;
        std::int64_t st = axis < rank() ? strides_[axis] * shape_[axis] : 1;
        t.shape_.insert(axis, 1);
        t.strides_.insert(axis, st);
        return t;
    }
    Tensor squeeze(int axis) const {
        axis = shape_.normalize(axis);
        DEVIANT_REQUIRE(shape_[axis] == 1, "squeeze of axis {} with extent {} in {}", axis, shape_[axis], shape_.str());
        Tensor t = *this;
        t.shape_.erase(axis);
        t.strides_.erase(axis);
        return t;
    }
    // Broadcast view to `shape` (numpy rules; broadcast axes get stride 0).
    Tensor expand(const Shape& shape) const {
        DEVIANT_REQUIRE(shape.rank() >= rank(), "cannot expand {} to {}", shape_.str(), shape.str());
        Tensor t = *this;
        t.shape_ = shape;
        int lead = shape.rank() - rank();
        Shape st;
        for (int i = 0; i < shape.rank(); ++i) {
            int j = i - lead;
            if (j < 0) { st.push_back(0); continue; }
            DEVIANT_REQUIRE(shape_[j] == shape[i] || shape_[j] == 1, "cannot expand {} to {}", shape_.str(), shape.str());
            st.push_back(shape_[j] == shape[i] ? strides_[j] : 0);
        }
        t.strides_ = st;
        return t;
    }

    // --- copies ---
    Tensor contiguous() const { return is_contiguous() ? *this : clone(); }
    Tensor clone() const { return to(device(), dtype_, /*force_copy=*/true); }
    Tensor to(Device dev) const { return to(dev, dtype_); }
    Tensor to(DType dt) const { return to(device(), dt); }
    Tensor to(Device dev, DType dt, bool force_copy = false) const {
        DEVIANT_REQUIRE(defined(), "converting an undefined tensor");
        if (!force_copy && dev == device() && dt == dtype_) return *this;
        Tensor out = empty(shape_, dt, dev);
        out.copy_from(*this);
        return out;
    }
    // Copies `src` into this tensor (shapes must match; any devices, dtypes and layouts).
    void copy_from(const Tensor& src) {
        DEVIANT_REQUIRE(src.shape() == shape_, "copy from shape {} into shape {}", src.shape().str(), shape_.str());
        if (numel() == 0) return;
        Device sd = src.device(), dd = device();
        if (sd == Device::cpu && dd == Device::cpu) {
            if (src.is_contiguous() && is_contiguous() && src.dtype() == dtype_) {
                std::memcpy(raw_data(), src.raw_data(), std::size_t(numel()) * dtype_size(dtype_));
                return;
            }
            DEVIANT_REQUIRE(is_contiguous(), "copy into a non-contiguous CPU tensor {}", describe());
            cpu_copy_strided(ref(), src.ref());
            return;
        }
        if (sd == Device::cuda && dd == Device::cuda) {
            DEVIANT_REQUIRE(is_contiguous(), "copy into a non-contiguous CUDA tensor {}", describe());
            kernels::copy_strided(ref(), src.ref());
            return;
        }
        // Host <-> device: bring the source to a contiguous block of the destination dtype first.
        Tensor s = src.device() == Device::cpu ? src.to(Device::cpu, dtype_).contiguous() : src.to(Device::cuda, dtype_).contiguous();
        DEVIANT_REQUIRE(is_contiguous(), "copy into a non-contiguous tensor {}", describe());
        cuda::memcpy(raw_data(), s.raw_data(), std::size_t(numel()) * dtype_size(dtype_),
                     dd == Device::cuda ? cuda::CopyKind::host_to_device : cuda::CopyKind::device_to_host);
    }
    void fill_(double value) {
        if (numel() == 0) return;
        DEVIANT_REQUIRE(is_contiguous(), "fill of non-contiguous tensor {}", describe());
        if (device() == Device::cuda) {
            kernels::fill(ref(), value);
            return;
        }
        switch (dtype_) {
            case DType::f32: std::fill_n(data<float>(), numel(), float(value)); break;
            case DType::f64: std::fill_n(data<double>(), numel(), value); break;
            case DType::bf16: std::fill_n(data<bf16>(), numel(), bf16(float(value))); break;
            case DType::i64: std::fill_n(data<std::int64_t>(), numel(), std::int64_t(value)); break;
            case DType::u8: std::fill_n(data<std::uint8_t>(), numel(), std::uint8_t(value)); break;
        }
    }

private:
    Shape resolve_shape(const Shape& s) const {
        Shape out = s;
        int infer = -1;
        std::int64_t known = 1;
        for (int i = 0; i < s.rank(); ++i) {
            if (s[i] == -1) {
                DEVIANT_REQUIRE(infer < 0, "shape {} has more than one -1", s.str());
                infer = i;
            } else known *= s[i];
        }
        if (infer >= 0) {
            DEVIANT_REQUIRE(known > 0 && numel() % known == 0, "cannot view {} as {}", shape_.str(), s.str());
            out[infer] = numel() / known;
        }
        DEVIANT_REQUIRE(out.numel() == numel(), "cannot view {} ({} elements) as {}", shape_.str(), numel(), s.str());
        return out;
    }

    static void cpu_copy_strided(const TensorRef& dst, const TensorRef& src) {
        std::int64_t n = src.numel();
        std::int64_t idx[Shape::max_dims] = {};
        auto convert = [&](auto* d, auto s_tag) {
            using S = decltype(s_tag);
            using D = std::remove_pointer_t<decltype(d)>;
            auto one = [](S v) {
                if constexpr (std::is_same_v<D, bf16>) return bf16(float(load(v)));
                else if constexpr (std::is_same_v<S, bf16>) return D(float(v));
                else return D(v);
            };
            const S* s = static_cast<const S*>(src.data);
            std::int64_t off = 0;
            if (src.rank > 0 && src.strides[src.rank - 1] == 1 && src.shape[src.rank - 1] > 0) {
                // rows of the innermost dim are contiguous: a flat (vectorisable) loop per row, the
                // odometer over the outer dims only
                const std::int64_t inner = src.shape[src.rank - 1];
                for (std::int64_t i = 0; i < n; i += inner) {
                    const S* row = s + off;
                    D* out = d + i;
                    for (std::int64_t j = 0; j < inner; ++j) out[j] = one(row[j]);
                    for (int k = src.rank - 2; k >= 0; --k) {
                        off += src.strides[k];
                        if (++idx[k] < src.shape[k]) break;
                        off -= src.strides[k] * src.shape[k];
                        idx[k] = 0;
                    }
                }
                return;
            }
            for (std::int64_t i = 0; i < n; ++i) {
                d[i] = one(s[off]);
                for (int k = src.rank - 1; k >= 0; --k) {  // odometer increment
                    off += src.strides[k];
                    if (++idx[k] < src.shape[k]) break;
                    off -= src.strides[k] * src.shape[k];
                    idx[k] = 0;
                }
            }
        };
        auto with_src = [&](auto* d) {
            switch (src.dtype) {
                case DType::f32: convert(d, float{}); break;
                case DType::f64: convert(d, double{}); break;
                case DType::bf16: convert(d, bf16{}); break;
                case DType::i64: convert(d, std::int64_t{}); break;
                case DType::u8: convert(d, std::uint8_t{}); break;
            }
        };
        switch (dst.dtype) {
            case DType::f32: with_src(static_cast<float*>(dst.data)); break;
            case DType::f64: with_src(static_cast<double*>(dst.data)); break;
            case DType::bf16: with_src(static_cast<bf16*>(dst.data)); break;
            case DType::i64: with_src(static_cast<std::int64_t*>(dst.data)); break;
            case DType::u8: with_src(static_cast<std::uint8_t*>(dst.data)); break;
        }
    }

    std::shared_ptr<Storage> storage_;
    std::int64_t offset_ = 0;
    Shape shape_, strides_;
    DType dtype_ = DType::f32;
};

// Checks that two tensors share shape, dtype and device; the error names both.
inline void require_same(const Tensor& a, const Tensor& b, const char* op) {
    DEVIANT_REQUIRE(a.shape() == b.shape(), "{}: shape mismatch {} vs {}", op, a.shape().str(), b.shape().str());
    DEVIANT_REQUIRE(a.dtype() == b.dtype(), "{}: dtype mismatch {} vs {}", op, dtype_name(a.dtype()), dtype_name(b.dtype()));
    DEVIANT_REQUIRE(a.device() == b.device(), "{}: device mismatch {} vs {}", op, device_name(a.device()), device_name(b.device()));
}
inline void require_same_device(const Tensor& a, const Tensor& b, const char* op) {
    DEVIANT_REQUIRE(a.device() == b.device(), "{}: device mismatch, {} vs {}", op, a.describe(), b.describe());
}

}  // namespace deviant
