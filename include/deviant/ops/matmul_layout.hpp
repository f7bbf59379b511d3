// deviant/ops/matmul_layout.hpp — how BLAS reads one strided matrix: row-major (no transpose) or
// column-major (read as the transpose of a row-major matrix), and its leading dimension.
// Shared by the CPU path (ops/matmul.hpp, OpenBLAS) and the CUDA path (kernels/matmul.cuh, cuBLASLt)
// so that a transposed view such as w.transpose(0, 1) is multiplied without a copy on both.
#pragma once
#include <algorithm>
#include <cstdint>

namespace deviant::ops {

struct MatrixLayout {
    bool ok = false;          // false: neither layout fits, the caller must copy
    bool transposed = false;  // true: stored column-major, i.e. a row-major (cols, rows) matrix
    std::int64_t ld = 0;      // leading dimension in elements of the stored row-major matrix
};

// Matrix (rows, cols) whose element (i, j) sits at i * row_stride + j * col_stride.
inline MatrixLayout matrix_layout(std::int64_t rows, std::int64_t cols, std::int64_t row_stride, std::int64_t col_stride) {
    const std::int64_t min_row_ld = std::max<std::int64_t>(1, cols), min_col_ld = std::max<std::int64_t>(1, rows);
    if ((col_stride == 1 || cols <= 1) && (rows <= 1 || row_stride >= min_row_ld))
        return {true, false, rows <= 1 ? min_row_ld : row_stride};
    if ((row_stride == 1 || rows <= 1) && (cols <= 1 || col_stride >= min_col_ld))
        return {true, true, cols <= 1 ? min_col_ld : col_stride};
    return {};
}

}  // namespace deviant::ops
