// deviant/core/hd.hpp — DEVIANT_HD marks small math functions compiled for both host and
// device, so the CPU reference and the CUDA kernel share one definition of each formula.
#pragma once
#if defined(__CUDACC__)
#define DEVIANT_HD __host__ __device__ __forceinline__
#else
#define DEVIANT_HD inline
#endif
