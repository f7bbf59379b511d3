// deviant/dist/communicator.hpp — the processes of one training job and the collectives they
// exchange gradients, metrics and optimizer shards with.
//
//   Communicator     rank(), size() and five collectives on tensors (in place):
//                      all_reduce_sum(t)          every rank's t becomes the sum over ranks
//                      all_reduce_sum(span<double>) the same for host numbers (metrics, counts, flags)
//                      reduce_scatter_sum(flat)   flat (size() * k,): rank r ends with the sum of range r
//                      all_gather(flat)           flat (size() * k,): range r comes from rank r, to every rank
//                      broadcast(t, root)         every rank's t becomes root's
//   SingleProcess    one process: every collective is the identity
//   MpiCommunicator  dist/mpi.hpp: MPI_COMM_WORLD (mpirun, Slurm srun); CPU tensors directly,
//                    CUDA tensors through host memory
//   NcclCommunicator dist/nccl.hpp: NCCL on CUDA tensors, bootstrapped over MPI, one GPU per rank
//   world()          dist/world.hpp: the job this process was started in
//
// The Trainer takes a communicator as a policy object (TrainingOptions::communicator): the same
// trainer code runs on one process or many, and a user trainer scales without changes. Sums are
// formed in the tensor's dtype (bfloat16 in float32). Ranges of reduce_scatter / all_gather are
// equal (callers pad), as NCCL's are.
#pragma once
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "deviant/core/tensor.hpp"

namespace deviant::dist {

class Communicator {
public:
    virtual ~Communicator() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;
    virtual std::string name() const = 0;  // "single process", "MPI", "NCCL"

    virtual void all_reduce_sum(Tensor& t) = 0;
    virtual void all_reduce_sum(std::span<double> values) = 0;
    virtual void reduce_scatter_sum(Tensor& flat) = 0;
    virtual void all_gather(Tensor& flat) = 0;
    virtual void broadcast(Tensor& t, int root) = 0;
    virtual void barrier() = 0;

    bool is_root() const { return rank() == 0; }
    double sum(double v) {
        all_reduce_sum(std::span<double>(&v, 1));
        return v;
    }
};

class SingleProcess final : public Communicator {
public:
    int rank() const override { return 0; }
    int size() const override { return 1; }
    std::string name() const override { return "single process"; }
    void all_reduce_sum(Tensor&) override {}
    void all_reduce_sum(std::span<double>) override {}
    void reduce_scatter_sum(Tensor&) override {}
    void all_gather(Tensor&) override {}
    void broadcast(Tensor&, int root) override { DEVIANT_REQUIRE(root == 0, "broadcast from rank {} in a single-process job", root); }
    void barrier() override {}
};

inline std::shared_ptr<Communicator> single_process() {
    static const auto one = std::make_shared<SingleProcess>();
    return one;
}

// Every rank's `s` becomes root's.
inline void broadcast_string(Communicator& comm, std::string& s, int root = 0) {
    if (comm.size() == 1) return;
    Tensor length = Tensor::from(std::vector<std::int64_t>{std::int64_t(s.size())}, {1});
    comm.broadcast(length, root);
    const std::int64_t n = length.to_vector<std::int64_t>()[0];
    std::vector<std::int64_t> chars(std::size_t(n), 0);
    if (comm.rank() == root) std::copy(s.begin(), s.end(), chars.begin());
    Tensor text = Tensor::from(chars, {n});
    if (n > 0) comm.broadcast(text, root);
    s.clear();
    for (std::int64_t c : text.to_vector<std::int64_t>()) s += char(c);
}

namespace detail {
// A contiguous tensor whose length is a multiple of `ranks`, for the equal-range collectives.
inline std::int64_t range_length(const Tensor& flat, int ranks, const char* what) {
    DEVIANT_REQUIRE(flat.rank() == 1 && flat.is_contiguous(), "{}: needs a contiguous (N,) tensor, got {}", what, flat.describe());
    DEVIANT_REQUIRE(flat.numel() % ranks == 0, "{}: {} elements do not split into {} equal ranges", what, flat.numel(), ranks);
    return flat.numel() / ranks;
}
}  // namespace detail

}  // namespace deviant::dist
