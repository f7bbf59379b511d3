// deviant/core/tensor_ref.hpp — a plain-data view of a tensor (pointer, dtype, shape, strides)
// that crosses from C++ into CUDA launchers: nvcc and the host compiler agree on its layout.
#pragma once
#include <cstdint>

#include "deviant/core/dtype.hpp"
#include "deviant/core/shape.hpp"

namespace deviant {

struct TensorRef {
    void* data = nullptr;
    DType dtype = DType::f32;
    int rank = 0;
    std::int64_t shape[Shape::max_dims] = {};
    std::int64_t strides[Shape::max_dims] = {};  // in elements

    std::int64_t numel() const {
        std::int64_t n = 1;
        for (int i = 0; i < rank; ++i) n *= shape[i];
        return n;
    }
    bool contiguous() const {
        std::int64_t acc = 1;
        for (int i = rank - 1; i >= 0; --i) {
            if (shape[i] != 1 && strides[i] != acc) return false;
            acc *= shape[i];
        }
        return true;
    }
};

}  // namespace deviant
