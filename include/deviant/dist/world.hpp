// deviant/dist/world.hpp — the job this process belongs to, found from its environment.
//
//   launched_by_mpi()   mpirun / mpiexec (Open MPI, MPICH, PMIx) or Slurm's srun with several tasks
//   world(device)       the communicator for this job, created once: NCCL for CUDA training when
//                       compiled with NCCL, MPI otherwise, SingleProcess when the process was not
//                       started by a launcher (or the build has no MPI: then a launch of several
//                       ranks is refused rather than run N times over the same data)
//   abort_world(code)   ends every rank of the job (MPI_Abort) after this rank failed
//   share_cores_among_local_ranks()  ranks on one node split its cores (worker pool, OpenBLAS)
//
// `deviant train` and any program built on the library call world() and need no other change to
// run under `mpirun -np N` or `srun`.
#pragma once
#include <cblas.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "deviant/core/thread_pool.hpp"
#include "deviant/dist/communicator.hpp"
#include "deviant/dist/mpi.hpp"
#include "deviant/dist/nccl.hpp"

namespace deviant::dist {

// The number of ranks the launcher started (1 when none).
inline int launched_ranks() {
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS"})
        if (const char* s = std::getenv(v)) {
            const int n = std::atoi(s);
            if (n > 0) return n;
        }
    return 1;
}
inline bool launched_by_mpi() { return launched_ranks() > 1 || std::getenv("OMPI_COMM_WORLD_RANK") || std::getenv("PMI_RANK") || std::getenv("PMIX_RANK"); }

constexpr bool compiled_with_mpi() {
#ifdef DEVIANT_WITH_MPI
    return true;
#else
    return false;
#endif
}
constexpr bool compiled_with_nccl() {
#if defined(DEVIANT_WITH_NCCL) && defined(DEVIANT_WITH_CUDA) && defined(DEVIANT_WITH_MPI)
    return true;
#else
    return false;
#endif
}

// Ranks of this job on this node (1 when unknown).
inline int local_ranks() {
    for (const char* v : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"})
        if (const char* s = std::getenv(v)) {
            const int n = std::atoi(s);
            if (n > 0) return n;
        }
    return 1;
}

// Ranks on one node share its cores: unless DEVIANT_NUM_THREADS / OPENBLAS_NUM_THREADS say
// otherwise, each rank's worker pool and OpenBLAS get cores / local ranks threads.
inline void share_cores_among_local_ranks() {
    const int local = local_ranks();
    if (local <= 1) return;
    const int threads = std::max(1, int(std::thread::hardware_concurrency()) / local);
    if (!std::getenv("DEVIANT_NUM_THREADS")) ThreadPool::set_num_threads(threads);
#ifdef OPENBLAS_VERSION
    if (!std::getenv("OPENBLAS_NUM_THREADS") && !std::getenv("OMP_NUM_THREADS")) openblas_set_num_threads(threads);
#endif
}

namespace detail {
struct World {
#ifdef DEVIANT_WITH_MPI
    std::unique_ptr<MpiSession> session;
#endif
    std::shared_ptr<Communicator> comm;
    Device device = Device::cpu;
    ~World() {
        comm.reset();  // NCCL before MPI_Finalize
#ifdef DEVIANT_WITH_MPI
        session.reset();
#endif
    }
};
inline World& world_state() {
    static World w;
    return w;
}
}  // namespace detail

// The communicator of this job for training on `device` (created on the first call).
inline std::shared_ptr<Communicator> world(Device device = Device::cpu) {
    detail::World& w = detail::world_state();
    if (w.comm) {
        DEVIANT_REQUIRE(w.device == device || w.comm->size() == 1, "dist::world: the job's communicator was created for {}, asked for {}",
                        device_name(w.device), device_name(device));
        return w.comm;
    }
    w.device = device;
    if (!launched_by_mpi()) {
        w.comm = single_process();
        return w.comm;
    }
    share_cores_among_local_ranks();
#ifdef DEVIANT_WITH_MPI
    w.session = std::make_unique<MpiSession>();
#if defined(DEVIANT_WITH_NCCL) && defined(DEVIANT_WITH_CUDA)
    if (device == Device::cuda) {
        w.comm = std::make_shared<NcclCommunicator>();
        return w.comm;
    }
#endif
    w.comm = std::make_shared<MpiCommunicator>();
    return w.comm;
#else
    DEVIANT_REQUIRE(launched_ranks() == 1, "started as one of {} ranks, but this build has no MPI support (install an MPI library and "
                                           "reconfigure); refusing to train the same data {} times over", launched_ranks(), launched_ranks());
    w.comm = single_process();
    return w.comm;
#endif
}

// The communicator if world() created one, else nullptr.
inline std::shared_ptr<Communicator> current_world() { return detail::world_state().comm; }

// Called by a failing rank: takes the other ranks down with it when the job has several.
inline void abort_world(int code) {
#ifdef DEVIANT_WITH_MPI
    auto c = current_world();
    if (c && c->size() > 1) abort_job(code);
#endif
    (void)code;
}

}  // namespace deviant::dist
