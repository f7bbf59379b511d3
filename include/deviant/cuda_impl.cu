// deviant/cuda_impl.cu — the one CUDA translation unit a program compiles to get every kernel.
// Linking the CMake target deviant::cuda adds it; by hand: nvcc -DDEVIANT_WITH_CUDA -c this file.
#ifndef DEVIANT_WITH_CUDA
#define DEVIANT_WITH_CUDA
#endif
#include "deviant/kernels/copy.cuh"
#include "deviant/kernels/elementwise.cuh"
#include "deviant/kernels/rope.cuh"
#include "deviant/kernels/shape.cuh"
#include "deviant/kernels/index.cuh"
#include "deviant/kernels/reduce.cuh"
#include "deviant/kernels/softmax.cuh"
#include "deviant/kernels/matmul.cuh"
#include "deviant/kernels/segment.cuh"
#include "deviant/kernels/adamw.cuh"
#include "deviant/kernels/grad_norm.cuh"
#include "deviant/kernels/norm.cuh"
#include "deviant/kernels/lm_head.cuh"
#include "deviant/kernels/attention.cuh"
