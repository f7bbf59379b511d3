// deviant/dist/mpi.hpp — data-parallel collectives over MPI (Open MPI, MPICH; launched by mpirun
// or Slurm's srun). Compiled when DEVIANT_WITH_MPI is defined (CMake does so when it finds MPI).
//
//   MpiSession       MPI_Init_thread on construction (when nobody initialised MPI yet), MPI_Finalize
//                    on destruction; one per process (dist/world.hpp holds it)
//   MpiCommunicator  the Communicator over MPI_COMM_WORLD. CPU tensors go to MPI as they are;
//                    CUDA tensors are staged through host memory (NCCL does better: dist/nccl.hpp);
//                    bfloat16 is summed in float32. Messages above 2^30 elements are split.
//   abort_job(code)  MPI_Abort: a rank that fails takes the whole job down instead of leaving the
//                    others waiting in a collective.
#pragma once
#ifdef DEVIANT_WITH_MPI
#include <mpi.h>

#include <algorithm>
#include <vector>

#include "deviant/dist/communicator.hpp"

namespace deviant::dist {

namespace detail {
inline void mpi_check(int rc, const char* what) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    fail("MPI error in {}: {}", what, std::string(text, std::size_t(len)));
}
#define DEVIANT_MPI(call) ::deviant::dist::detail::mpi_check((call), #call)

inline MPI_Datatype mpi_type(DType t) {
    switch (t) {
        case DType::f32: return MPI_FLOAT;
        case DType::f64: return MPI_DOUBLE;
        case DType::i64: return MPI_INT64_T;
        default: fail("MPI collectives take float32, float64 or int64 tensors, got {}", dtype_name(t));
    }
}
inline constexpr std::int64_t max_message = std::int64_t(1) << 30;  // elements per MPI call (int counts)
}  // namespace detail

inline bool mpi_initialized() {
    int flag = 0;
    MPI_Initialized(&flag);
    int done = 0;
    MPI_Finalized(&done);
    return flag && !done;
}

class MpiSession {
public:
    MpiSession() {
        if (mpi_initialized()) return;
        int provided = 0;
        DEVIANT_MPI(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
        owner_ = true;
    }
    ~MpiSession() {
        if (owner_ && mpi_initialized()) MPI_Finalize();
    }
    MpiSession(const MpiSession&) = delete;
    MpiSession& operator=(const MpiSession&) = delete;

private:
    bool owner_ = false;
};

[[noreturn]] inline void abort_job(int code) {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::abort();
}

class MpiCommunicator final : public Communicator {
public:
    MpiCommunicator() {
        DEVIANT_REQUIRE(mpi_initialized(), "MpiCommunicator: MPI is not initialised (create an MpiSession first)");
        DEVIANT_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
        DEVIANT_MPI(MPI_Comm_size(MPI_COMM_WORLD, &size_));
    }
    int rank() const override { return rank_; }
    int size() const override { return size_; }
    std::string name() const override { return "MPI"; }

    void all_reduce_sum(Tensor& t) override {
        with_host_sum_buffer(t, "all_reduce_sum", [&](Tensor& h) {
            auto* base = static_cast<char*>(h.raw_data());
            const std::size_t item = dtype_size(h.dtype());
            for (std::int64_t s = 0; s < h.numel(); s += detail::max_message) {
                const int n = int(std::min(detail::max_message, h.numel() - s));
                DEVIANT_MPI(MPI_Allreduce(MPI_IN_PLACE, base + std::size_t(s) * item, n, detail::mpi_type(h.dtype()), MPI_SUM, MPI_COMM_WORLD));
            }
        });
    }
    void all_reduce_sum(std::span<double> v) override {
        if (v.empty()) return;
        DEVIANT_MPI(MPI_Allreduce(MPI_IN_PLACE, v.data(), int(v.size()), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    }
    void reduce_scatter_sum(Tensor& flat) override {
        const std::int64_t k = detail::range_length(flat, size_, "reduce_scatter_sum");
        DEVIANT_REQUIRE(k < detail::max_message, "reduce_scatter_sum: {} elements per rank exceed one MPI message", k);
        with_host_sum_buffer(flat, "reduce_scatter_sum", [&](Tensor& h) {
            Tensor mine = Tensor::empty({k}, h.dtype());
            DEVIANT_MPI(MPI_Reduce_scatter_block(h.raw_data(), mine.raw_data(), int(k), detail::mpi_type(h.dtype()), MPI_SUM, MPI_COMM_WORLD));
            h.narrow(0, std::int64_t(rank_) * k, k).copy_from(mine);
        });
    }
    void all_gather(Tensor& flat) override {
        const std::int64_t k = detail::range_length(flat, size_, "all_gather");
        const std::int64_t bytes = k * std::int64_t(dtype_size(flat.dtype()));
        DEVIANT_REQUIRE(bytes < detail::max_message * 2, "all_gather: {} bytes per rank exceed one MPI message", bytes);
        with_host_bytes(flat, [&](Tensor& h) {
            DEVIANT_MPI(MPI_Allgather(MPI_IN_PLACE, 0, MPI_BYTE, h.raw_data(), int(bytes), MPI_BYTE, MPI_COMM_WORLD));
        });
    }
    void broadcast(Tensor& t, int root) override {
        DEVIANT_REQUIRE(root >= 0 && root < size_, "broadcast from rank {} of {}", root, size_);
        with_host_bytes(t, [&](Tensor& h) {
            auto* base = static_cast<char*>(h.raw_data());
            const std::int64_t bytes = h.numel() * std::int64_t(dtype_size(h.dtype()));
            for (std::int64_t s = 0; s < bytes; s += detail::max_message)
                DEVIANT_MPI(MPI_Bcast(base + s, int(std::min(detail::max_message, bytes - s)), MPI_BYTE, root, MPI_COMM_WORLD));
        });
    }
    void barrier() override { DEVIANT_MPI(MPI_Barrier(MPI_COMM_WORLD)); }

private:
    // Runs f on a contiguous host tensor MPI can sum (float32 for bfloat16), then writes the
    // result back into t when f worked on a copy.
    template <class F>
    static void with_host_sum_buffer(Tensor& t, const char* what, F&& f) {
        DEVIANT_REQUIRE(t.defined(), "{}: undefined tensor", what);
        const DType sum_type = t.dtype() == DType::bf16 ? DType::f32 : t.dtype();
        if (t.device() == Device::cpu && t.is_contiguous() && sum_type == t.dtype()) {
            f(t);
            return;
        }
        Tensor h = t.to(Device::cpu, sum_type, /*force_copy=*/true).contiguous();
        f(h);
        t.copy_from(h.to(t.device(), t.dtype()));
    }
    template <class F>
    static void with_host_bytes(Tensor& t, F&& f) {
        if (t.device() == Device::cpu && t.is_contiguous()) {
            f(t);
            return;
        }
        Tensor h = t.to(Device::cpu, t.dtype(), /*force_copy=*/true).contiguous();
        f(h);
        t.copy_from(h.to(t.device()));
    }

    int rank_ = 0, size_ = 1;
};

}  // namespace deviant::dist
#endif  // DEVIANT_WITH_MPI
