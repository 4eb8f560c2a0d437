// Enough of CUDA's device language to run kernels.cu on the CPU, for tests on machines without
// a GPU. Each block runs on its own, one after another; each thread of the block is a host
// thread, so __syncthreads() is a barrier that every live thread of the block reaches. Shared
// memory is `static` (one copy, used by one block at a time); threadIdx is per thread.
// Differences from a GPU that a test must allow for: no FMA contraction (results differ in
// the last bits), no warps (kernels must not rely on warp-synchronous code; a shuffle is
// emulated with the block's barrier, so only shuffles that the whole block makes together
// work), and the blocks of a grid run one at a time, last to first. What it cannot show: races
// between blocks (missing fences), shared memory read before it is written (it keeps the last
// block's values), and races within a block that the host's thread scheduling happens to hide.
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

struct emu_dim3 {
    unsigned x, y, z;
};
static thread_local emu_dim3 threadIdx;
static emu_dim3 blockIdx, blockDim, gridDim;
static std::barrier<>* emu_barrier;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__

// 4-byte aligned here (a test's Vec<f32> promises no more); a GPU needs 16.
struct float4 {
    float x, y, z, w;
};

inline void __syncthreads() { emu_barrier->arrive_and_wait(); }
// A warp shuffle, emulated with the block's barrier: correct only where every live thread of
// the block makes the same call (as in a block-wide reduction), which the kernels keep to.
template <typename T>
T __shfl_xor_sync(unsigned, T v, int lane_mask) {
    static T slot[1024];
    slot[threadIdx.x] = v;
    __syncthreads();
    T r = slot[threadIdx.x ^ (unsigned)lane_mask];
    __syncthreads();
    return r;
}
inline float __fmul_rn(float a, float b) {
    volatile float r = a * b;
    return r;
}
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
using std::exp;
using std::log;

// A kernel argument from its 8-byte slot, as the CUDA backend packs them: pointers and 64-bit
// values fill the slot, 32-bit values sit in its low half.
template <typename T>
T emu_from_slot(uint64_t s) {
    T v;
    if constexpr (std::is_pointer_v<T>) {
        v = reinterpret_cast<T>(s);
    } else if constexpr (sizeof(T) == 8) {
        std::memcpy(&v, &s, 8);
    } else {
        uint32_t lo = (uint32_t)s;
        std::memcpy(&v, &lo, sizeof(T));
    }
    return v;
}

template <typename... A, size_t... I>
void emu_call(void (*f)(A...), const uint64_t* s, std::index_sequence<I...>) {
    f(emu_from_slot<A>(s[I])...);
}

// Runs kernel `f` over `grid` blocks of `block` threads; -1 when the argument count is wrong.
template <typename... A>
int emu_run(void (*f)(A...), unsigned grid, unsigned block, const uint64_t* slots, int n) {
    if (n != (int)sizeof...(A)) return -1;
    blockDim = {block, 1, 1};
    gridDim = {grid, 1, 1};
    // Blocks run last to first, so that a kernel that needs block 0 to run first, or the last
    // block to finish last, fails here.
    for (unsigned i = 0; i < grid; i++) {
        unsigned b = grid - 1 - i;
        blockIdx = {b, 0, 0};
        std::barrier<> bar((std::ptrdiff_t)block);
        emu_barrier = &bar;
        std::vector<std::thread> threads;
        threads.reserve(block);
        for (unsigned t = 0; t < block; t++) {
            threads.emplace_back([&, t] {
                threadIdx = {t, 0, 0};
                emu_call(f, slots, std::index_sequence_for<A...>{});
                // A thread that has returned no longer counts at the barrier.
                bar.arrive_and_drop();
            });
        }
        for (auto& t : threads) t.join();
    }
    return 0;
}
