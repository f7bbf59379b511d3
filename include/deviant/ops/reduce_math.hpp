// deviant/ops/reduce_math.hpp — the comparison rule of max reductions, shared by the CPU
// reference (ops/reduce.hpp) and the CUDA kernel (kernels/reduce.cuh) so both pick the same index.
#pragma once
#include <cstdint>

#include "deviant/core/hd.hpp"

namespace deviant::math {

// True when candidate (v, i) should replace the running maximum (best, bi): larger, or NaN over a
// number, or equal with a smaller index (so ties resolve to the first occurrence in any order).
template <class C> DEVIANT_HD bool max_better(C v, std::int64_t i, C best, std::int64_t bi) {
    bool vn = v != v, bn = best != best;
    if (vn || bn) return vn && (!bn || i < bi);
    return v > best || (v == best && i < bi);
}

}  // namespace deviant::math
