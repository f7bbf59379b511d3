// deviant/dist/nccl.hpp — data-parallel collectives on CUDA tensors over NCCL, one GPU per rank.
// Compiled when DEVIANT_WITH_NCCL is defined (with DEVIANT_WITH_CUDA and DEVIANT_WITH_MPI: CMake
// does so when it finds NCCL beside CUDA and MPI).
//
// Bootstrap: rank 0 creates the NCCL unique id and MPI broadcasts it; each rank takes the GPU of
// its local rank on the node (local_rank() % devices), as torchrun and Slurm's one-task-per-GPU
// layout expect. CUDA tensors go to NCCL on the default stream (synchronised before returning, as
// the trainer reads the result right away); CPU tensors and host numbers go through MPI.
#pragma once
#if defined(DEVIANT_WITH_NCCL) && defined(DEVIANT_WITH_CUDA) && defined(DEVIANT_WITH_MPI)
#include <nccl.h>

#include <cstdlib>

#include "deviant/core/cuda_runtime.hpp"
#include "deviant/dist/mpi.hpp"

namespace deviant::dist {

namespace detail {
inline void nccl_check(ncclResult_t r, const char* what) {
    if (r != ncclSuccess) fail("NCCL error in {}: {}", what, ncclGetErrorString(r));
}
#define DEVIANT_NCCL(call) ::deviant::dist::detail::nccl_check((call), #call)

inline ncclDataType_t nccl_type(DType t) {
    switch (t) {
        case DType::f32: return ncclFloat32;
        case DType::f64: return ncclFloat64;
        case DType::bf16: return ncclBfloat16;
        case DType::i64: return ncclInt64;
        default: fail("NCCL collectives take float32, float64, bfloat16 or int64 tensors, got {}", dtype_name(t));
    }
}
}  // namespace detail

// This process's rank among the ranks of its node (Open MPI, MPICH / PMI, Slurm); 0 when unknown.
inline int local_rank() {
    for (const char* v : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK"})
        if (const char* s = std::getenv(v)) return std::atoi(s);
    return 0;
}

class NcclCommunicator final : public Communicator {
public:
    NcclCommunicator() {
        int devices = 0;
        DEVIANT_CUDA_CHECK(cudaGetDeviceCount(&devices));
        DEVIANT_REQUIRE(devices > 0, "NCCL: no CUDA device on this node");
        device_ = local_rank() % devices;
        DEVIANT_CUDA_CHECK(cudaSetDevice(device_));
        ncclUniqueId id;
        if (mpi_.rank() == 0) DEVIANT_NCCL(ncclGetUniqueId(&id));
        DEVIANT_MPI(MPI_Bcast(&id, int(sizeof id), MPI_BYTE, 0, MPI_COMM_WORLD));
        DEVIANT_NCCL(ncclCommInitRank(&comm_, mpi_.size(), id, mpi_.rank()));
    }
    ~NcclCommunicator() override {
        if (comm_) ncclCommDestroy(comm_);
    }
    NcclCommunicator(const NcclCommunicator&) = delete;
    NcclCommunicator& operator=(const NcclCommunicator&) = delete;

    int rank() const override { return mpi_.rank(); }
    int size() const override { return mpi_.size(); }
    std::string name() const override { return "NCCL"; }
    int device() const { return device_; }

    void all_reduce_sum(Tensor& t) override {
        if (!on_gpu(t)) return mpi_.all_reduce_sum(t);
        DEVIANT_NCCL(ncclAllReduce(t.raw_data(), t.raw_data(), std::size_t(t.numel()), detail::nccl_type(t.dtype()), ncclSum, comm_, nullptr));
        cuda::synchronize();
    }
    void all_reduce_sum(std::span<double> v) override { mpi_.all_reduce_sum(v); }
    void reduce_scatter_sum(Tensor& flat) override {
        if (!on_gpu(flat)) return mpi_.reduce_scatter_sum(flat);
        const std::int64_t k = detail::range_length(flat, size(), "reduce_scatter_sum");
        const std::size_t item = dtype_size(flat.dtype());
        auto* mine = static_cast<char*>(flat.raw_data()) + std::size_t(rank()) * std::size_t(k) * item;
        DEVIANT_NCCL(ncclReduceScatter(flat.raw_data(), mine, std::size_t(k), detail::nccl_type(flat.dtype()), ncclSum, comm_, nullptr));
        cuda::synchronize();
    }
    void all_gather(Tensor& flat) override {
        if (!on_gpu(flat)) return mpi_.all_gather(flat);
        const std::int64_t k = detail::range_length(flat, size(), "all_gather");
        const std::size_t bytes = std::size_t(k) * dtype_size(flat.dtype());
        const auto* mine = static_cast<const char*>(flat.raw_data()) + std::size_t(rank()) * bytes;
        DEVIANT_NCCL(ncclAllGather(mine, flat.raw_data(), bytes, ncclUint8, comm_, nullptr));
        cuda::synchronize();
    }
    void broadcast(Tensor& t, int root) override {
        if (!on_gpu(t)) return mpi_.broadcast(t, root);
        const std::size_t bytes = std::size_t(t.numel()) * dtype_size(t.dtype());
        DEVIANT_NCCL(ncclBroadcast(t.raw_data(), t.raw_data(), bytes, ncclUint8, root, comm_, nullptr));
        cuda::synchronize();
    }
    void barrier() override { mpi_.barrier(); }

private:
    static bool on_gpu(const Tensor& t) {
        DEVIANT_REQUIRE(t.defined(), "NCCL collective on an undefined tensor");
        if (t.device() != Device::cuda) return false;
        DEVIANT_REQUIRE(t.is_contiguous(), "NCCL collectives need contiguous tensors, got {}", t.describe());
        return true;
    }

    MpiCommunicator mpi_;
    ncclComm_t comm_ = nullptr;
    int device_ = 0;
};

}  // namespace deviant::dist
#endif
