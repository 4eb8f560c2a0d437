// The elementwise and reduction kernels of the CUDA backend, compiled at run time by NVRTC.
// Each mirrors a plain loop of crates/dae/src/kernels.rs or crates/dae/src/corrupt.rs (named
// beside it), and is tested against it: on a GPU in tests/cuda.rs, and on the CPU, through a
// small emulation of CUDA, in tests/cuda_emu.rs. Matrices are row-major; `n` counts values.

typedef unsigned int u32;
typedef unsigned long long u64;

// Activations: 0 sigmoid, 1 tanh, 2 relu, 3 identity (the order of config::Activation).
__device__ __forceinline__ float act_apply(int act, float a) {
    switch (act) {
    case 0:
        if (a >= 0.f) return 1.f / (1.f + expf(-a));
        else { float e = expf(a); return e / (1.f + e); }
    case 1: return tanhf(a);
    case 2: return fmaxf(a, 0.f);
    default: return a;
    }
}

// s'(a) through the output y = s(a).
__device__ __forceinline__ float act_grad_out(int act, float y) {
    switch (act) {
    case 0: return y * (1.f - y);
    case 1: return 1.f - y * y;
    case 2: return y > 0.f ? 1.f : 0.f;
    default: return 1.f;
    }
}

__device__ __forceinline__ u64 gid() { return (u64)blockIdx.x * blockDim.x + threadIdx.x; }

// kernels::bias_act_row over rows × cols.
extern "C" __global__ void bias_act(float* x, const float* bias, int act, u32 rows, u32 cols) {
    u64 i = gid();
    if (i >= (u64)rows * cols) return;
    x[i] = act_apply(act, x[i] + bias[i % cols]);
}

// delta · s'(a) through the output y = s(a), as kernels::act_grad (relu zeroes where y <= 0).
// The product is rounded on its own (__fmul_rn is never contracted into an FMA), so a caller
// that sums the results gets the same values as act_grad followed by col_sums.
__device__ __forceinline__ float act_grad_apply(int act, float delta, float y) {
    if (act == 2) return y <= 0.f ? 0.f : delta;
    return __fmul_rn(delta, act_grad_out(act, y));
}

// kernels::act_grad.
extern "C" __global__ void act_grad(float* delta, const float* y, int act, u64 n) {
    u64 i = gid();
    if (i >= n) return;
    delta[i] = act_grad_apply(act, delta[i], y[i]);
}

// Dataset::gather: out[r, j] = scale(data[idx[r], j]), u8 values read as v / 255.
extern "C" __global__ void gather_u8(float* out, const unsigned char* data, const u32* idx, u32 rows, u32 cols,
                                     const float* offset, const float* factor) {
    u64 i = gid();
    if (i >= (u64)rows * cols) return;
    u32 r = (u32)(i / cols), j = (u32)(i % cols);
    float v = (float)data[(u64)idx[r] * cols + j] / 255.f;
    if (offset) v = (v - offset[j]) * factor[j];
    out[i] = v;
}

extern "C" __global__ void gather_f32(float* out, const float* data, const u32* idx, u32 rows, u32 cols,
                                      const float* offset, const float* factor) {
    u64 i = gid();
    if (i >= (u64)rows * cols) return;
    u32 r = (u32)(i / cols), j = (u32)(i % cols);
    float v = data[(u64)idx[r] * cols + j];
    if (offset) v = (v - offset[j]) * factor[j];
    out[i] = v;
}

// A fixed-order tree sum of one block's `v` (blockDim.x a power of two, at most 256).
__device__ double block_sum(double v) {
    __shared__ double s[256];
    s[threadIdx.x] = v;
    __syncthreads();
    for (u32 w = blockDim.x / 2; w > 0; w /= 2) {
        if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
        __syncthreads();
    }
    double r = s[0];
    __syncthreads();
    return r;
}

// kernels::loss_grad_row, one block per row. loss: 0 cross-entropy, 1 squared error; output:
// 0 rows only, 1 gradient, 2 elements. emphasis: 0 none, else weights w_corrupted, w_clean
// (with `mask` null every input counts as clean).
extern "C" __global__ void loss_grad(float* pre, const float* c, const float* target, const float* mask,
                                     int loss, int decoder, int emphasis, float w_corrupted, float w_clean,
                                     float grad_scale, int output, u32 cols, float* row_loss) {
    u32 r = blockIdx.x;
    u64 base = (u64)r * cols;
    double total = 0.0;
    for (u32 j = threadIdx.x; j < cols; j += blockDim.x) {
        float a = pre[base + j] + c[j];
        float x = target[base + j];
        float w = 1.f;
        if (emphasis) w = (mask && mask[base + j] != 0.f) ? w_corrupted : w_clean;
        float l, g;
        if (loss == 0) {
            float e = expf(-fabsf(a));
            l = fmaxf(a, 0.f) - a * x + log1pf(e);
            float s = a >= 0.f ? 1.f / (1.f + e) : e / (1.f + e);
            g = s - x;
        } else {
            float z = act_apply(decoder, a);
            float d = z - x;
            l = d * d;
            g = 2.f * d * act_grad_out(decoder, z);
        }
        total += (double)(w * l);
        if (output == 1) pre[base + j] = grad_scale * w * g;
        else if (output == 2) pre[base + j] = w * l;
    }
    total = block_sum(total);
    if (threadIdx.x == 0) row_loss[r] = (float)total;
}

// kernels::softmax_xent_row, one thread per row.
extern "C" __global__ void softmax_xent(float* z, const float* bias, const float* labels, int output, float grad_scale,
                                        u32 rows, u32 classes, float* row_loss, float* row_correct) {
    u64 r = gid();
    if (r >= rows) return;
    float* zr = z + r * classes;
    u32 label = (u32)labels[r];
    float mx = __int_as_float(0xff800000);  // -infinity
    u32 arg = 0;
    for (u32 j = 0; j < classes; j++) {
        zr[j] += bias[j];
        if (zr[j] > mx) { mx = zr[j]; arg = j; }
    }
    double sum = 0.0;
    for (u32 j = 0; j < classes; j++) sum += exp((double)(zr[j] - mx));
    double lse = (double)mx + log(sum);
    row_loss[r] = (float)(lse - (double)zr[label]);
    row_correct[r] = arg == label ? 1.f : 0.f;
    if (output == 1) {
        for (u32 j = 0; j < classes; j++) {
            float p = (float)exp((double)zr[j] - lse);
            zr[j] = grad_scale * (p - (j == label ? 1.f : 0.f));
        }
    } else if (output == 2) {
        for (u32 j = 0; j < classes; j++) zr[j] = (float)exp((double)zr[j] - lse);
    }
}

// Column sums, out[j] = β·out[j] + α·Σ_r x[r, j] (β = 0: out is not read). A block of 1024
// threads takes a stripe of 32 columns: 32 row lanes each sum every 32nd row, then the lanes
// are added in a fixed tree order, so the sum is the same on every run. With `y` given, x is
// first replaced by act_grad(x, y) (each element once), and the sums are of the new values.
__device__ __forceinline__ void col_sums_stripe(float* out, float* x, const float* y, int act, u32 stripe, u32 rows,
                                                u32 cols, float alpha, float beta) {
    __shared__ float s[32][33];
    u32 c = threadIdx.x % 32, lane = threadIdx.x / 32;
    u64 j = (u64)stripe * 32 + c;
    float acc = 0.f;
    if (j < cols) {
        if (y) {
            for (u32 r = lane; r < rows; r += 32) {
                u64 i = (u64)r * cols + j;
                float v = act_grad_apply(act, x[i], y[i]);
                x[i] = v;
                acc += v;
            }
        } else {
            for (u32 r = lane; r < rows; r += 32) acc += x[(u64)r * cols + j];
        }
    }
    s[lane][c] = acc;
    __syncthreads();
    for (u32 w = 16; w > 0; w /= 2) {
        if (lane < w) s[lane][c] += s[lane + w][c];
        __syncthreads();
    }
    if (lane == 0 && j < cols) out[j] = beta == 0.f ? alpha * s[0][c] : beta * out[j] + alpha * s[0][c];
}

extern "C" __global__ void col_sums(float* out, const float* x, u32 rows, u32 cols, float alpha, float beta) {
    col_sums_stripe(out, (float*)x, 0, 3, blockIdx.x, rows, cols, alpha, beta);
}

// Two column sums in one launch (the backward pass's bias gradients): the first stripes of
// blocks do out[j] = β·out[j] + α·Σ_r act_grad(x, y)[r, j], writing act_grad(x, y) back to x;
// the rest out2 = β·out2 + α·Σ_r x2[r, j] over cols2 columns (none when x2 is null).
extern "C" __global__ void act_grad_col_sums(float* out, float* x, const float* y, int act, u32 cols, float* out2,
                                             const float* x2, u32 cols2, u32 rows, float alpha, float beta) {
    u32 stripes = (cols + 31) / 32;
    if (blockIdx.x < stripes) col_sums_stripe(out, x, y, act, blockIdx.x, rows, cols, alpha, beta);
    else col_sums_stripe(out2, (float*)x2, 0, 3, blockIdx.x - stripes, rows, cols2, alpha, beta);
}

extern "C" __global__ void copy_f32(float* dst, const float* src, u64 n) {
    u64 i = gid();
    if (i < n) dst[i] = src[i];
}

extern "C" __global__ void fill(float* x, float v, u64 n) {
    u64 i = gid();
    if (i < n) x[i] = v;
}

extern "C" __global__ void mul(float* out, const float* a, const float* b, u64 n) {
    u64 i = gid();
    if (i < n) out[i] = a[i] * b[i];
}

extern "C" __global__ void mul_assign(float* x, const float* m, u64 n) {
    u64 i = gid();
    if (i < n) x[i] *= m[i];
}

extern "C" __global__ void scale(float* x, float f, u64 n) {
    u64 i = gid();
    if (i < n) x[i] *= f;
}

// Σ x² in f64 by one block of 256 threads, each over a fixed stride: the same sum every time.
extern "C" __global__ void sum_squares(const float* x, u64 n, double* out) {
    double s = 0.0;
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) s += (double)x[i] * (double)x[i];
    s = block_sum(s);
    if (threadIdx.x == 0) *out = s;
}

// kernels::update. kind: 0 SGD, 1 Adam, 2 AdamW; `m` null for SGD without momentum.
extern "C" __global__ void update(float* p, const float* g, float* m, float* v, u64 n, int kind, float lr,
                                  float momentum, int nesterov, float wd, float beta1, float beta2, float eps,
                                  float step_size, float bc2_sqrt) {
    u64 i = gid();
    if (i >= n) return;
    float pi = p[i], gi = g[i];
    if (kind == 0) {
        float d = gi + wd * pi;
        if (m) {
            float b = momentum * m[i] + d;
            m[i] = b;
            pi -= lr * (nesterov ? d + momentum * b : b);
        } else {
            pi -= lr * d;
        }
    } else {
        if (kind == 2) { pi *= 1.f - lr * wd; }
        else { gi = gi + wd * pi; }
        float mi = m[i] + (1.f - beta1) * (gi - m[i]);
        float vi = beta2 * v[i] + (1.f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        pi -= step_size * mi / denom;
    }
    p[i] = pi;
}

// ---- Noise: Philox4x32-10 exactly as crate::rng, laid out as crate::corrupt documents ----

__device__ __forceinline__ void philox(u32 k0, u32 k1, u32 c[4]) {
    for (int round = 0; round < 10; round++) {
        if (round > 0) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        u64 p0 = (u64)0xD2511F53u * c[0];
        u64 p1 = (u64)0xCD9E8D57u * c[2];
        u32 n0 = (u32)(p1 >> 32) ^ c[1] ^ k0;
        u32 n2 = (u32)(p0 >> 32) ^ c[3] ^ k1;
        c[1] = (u32)p1;
        c[3] = (u32)p0;
        c[0] = n0;
        c[2] = n2;
    }
}

__device__ __forceinline__ float unit(u32 b) { return (float)(b >> 8) * (1.f / 16777216.f); }
__device__ __forceinline__ float unit_open(u32 b) { return (float)((b >> 8) + 1) * (1.f / 16777216.f); }

// One thread per (row, group g, lane l): block 8g + l of the row, i.e. the row's words
// 32g + 8w + l for w = 0..4. kind: 0 none, 1 masking, 2 gaussian, 3 salt-and-pepper (groups of
// 16 elements). `src(r, j)` gives the clean value of row r, column j (each element's once, from
// the one thread it belongs to); `mask` may be null.
template <typename Src>
__device__ __forceinline__ void corrupt_rows(Src src, float* xt, float* mask, int kind, float level, u32 seed_lo,
                                             u32 seed_hi, u32 stream, u32 epoch, u32 row0, u32 rows, u32 cols) {
    u32 per = kind == 3 ? 16 : 32;
    u32 groups = (cols + per - 1) / per;
    u64 t = gid();
    if (t >= (u64)rows * groups * 8) return;
    u32 l = (u32)(t % 8), g = (u32)((t / 8) % groups), r = (u32)(t / (8 * (u64)groups));
    u64 base = (u64)r * cols;
    u32 w[4] = {8 * g + l, row0 + r, epoch, stream};
    if (kind != 0) philox(seed_lo, seed_hi, w);
    if (kind == 0 || kind == 1) {
        for (u32 k = 0; k < 4; k++) {
            u32 j = 32 * g + 8 * k + l;
            if (j >= cols) continue;
            float v = src(r, j);
            bool hit = kind == 1 && unit(w[k]) < level;
            xt[base + j] = hit ? 0.f : v;
            if (mask) mask[base + j] = hit ? 1.f : 0.f;
        }
    } else if (kind == 2) {
        for (u32 k = 0; k < 4; k += 2) {
            float rad = sqrtf(-2.f * logf(unit_open(w[k])));
            float s, c;
            sincosf(6.28318530717958647692f * unit(w[k + 1]), &s, &c);
            u32 j0 = 32 * g + 8 * k + l, j1 = j0 + 8;
            if (j0 < cols) { xt[base + j0] = src(r, j0) + level * (rad * c); if (mask) mask[base + j0] = 1.f; }
            if (j1 < cols) { xt[base + j1] = src(r, j1) + level * (rad * s); if (mask) mask[base + j1] = 1.f; }
        }
    } else {
        for (u32 h = 0; h < 2; h++) {
            u32 j = 16 * g + 8 * h + l;
            if (j >= cols) continue;
            float v = src(r, j);
            bool hit = unit(w[2 * h]) < level;
            float salt = (float)(w[2 * h + 1] >> 31);
            xt[base + j] = hit ? salt : v;
            if (mask) mask[base + j] = hit ? 1.f : 0.f;
        }
    }
}

// crate::corrupt over rows × cols of x (dropout masks: x null, masking with every kept value
// `kept`).
extern "C" __global__ void corrupt(const float* x, float* xt, float* mask, int kind, float level, float kept,
                                   u32 seed_lo, u32 seed_hi, u32 stream, u32 epoch, u32 row0, u32 rows, u32 cols) {
    auto src = [=](u32 r, u32 j) { return x ? x[(u64)r * cols + j] : kept; };
    corrupt_rows(src, xt, mask, kind, level, seed_lo, seed_hi, stream, epoch, row0, rows, cols);
}

// Value `at` of the data: u8 read as v / 255 when `is_u8`, else f32.
__device__ __forceinline__ float raw_value(const void* data, int is_u8, u64 at) {
    return is_u8 ? (float)((const unsigned char*)data)[at] / 255.f : ((const float*)data)[at];
}

// Dataset::gather followed by corrupt, in one pass: x[r, j] = scale(data[idx[r], j]) (u8 values
// read as v / 255 when `is_u8`), then xt (and mask) exactly as `corrupt` makes them from x, with
// the same threads, counters and draws.
__device__ __forceinline__ float gathered(const void* data, int is_u8, const u32* idx, const float* offset,
                                          const float* factor, u32 r, u32 cols, u32 j) {
    float v = raw_value(data, is_u8, (u64)idx[r] * cols + j);
    // Rounded on its own, as gather_* store it, before any use in the noise.
    if (offset) v = __fmul_rn(v - offset[j], factor[j]);
    return v;
}

extern "C" __global__ void gather_corrupt(float* x, float* xt, float* mask, const void* data, const u32* idx,
                                          const float* offset, const float* factor, int is_u8, int kind, float level,
                                          u64 seed, u32 stream, u32 epoch, u32 row0, u32 rows, u32 cols) {
    auto src = [=](u32 r, u32 j) {
        float v = gathered(data, is_u8, idx, offset, factor, r, cols, j);
        x[(u64)r * cols + j] = v;
        return v;
    };
    corrupt_rows(src, xt, mask, kind, level, (u32)seed, (u32)(seed >> 32), stream, epoch, row0, rows, cols);
}

// Dataset::gather_augmented: row r of the batch is the image data[idx[r]] (h × w) translated by
// (dy, dx) and mirrored as crate::augment::Augment::draw gives them for position row0 + r,
// vacated pixels 0, then scaled: out[r, j] = scale_j(raw value of the source pixel, or 0).
extern "C" __global__ void gather_augment(float* out, const void* data, const u32* idx, const float* offset,
                                          const float* factor, int is_u8, u32 shift, int flip, u64 seed, u32 stream,
                                          u32 epoch, u32 row0, u32 rows, u32 h, u32 w) {
    u32 cols = h * w;
    u64 i = gid();
    if (i >= (u64)rows * cols) return;
    u32 r = (u32)(i / cols), j = (u32)(i % cols);
    u32 c[4] = {row0 + r, epoch, stream, 0};
    philox((u32)seed, (u32)(seed >> 32), c);
    u32 span = 2 * shift + 1;
    int dy = (int)(c[0] % span) - (int)shift, dx = (int)(c[1] % span) - (int)shift;
    bool mirrored = flip && (c[2] & 1u);
    int sy = (int)(j / w) - dy, sx = (int)(j % w) - dx;
    float v = 0.f;
    if (sy >= 0 && sx >= 0 && sy < (int)h && sx < (int)w) {
        u32 s = (u32)sy * w + (mirrored ? w - 1 - (u32)sx : (u32)sx);
        v = raw_value(data, is_u8, (u64)idx[r] * cols + s);
    }
    if (offset) v = __fmul_rn(v - offset[j], factor[j]);
    out[i] = v;
}
