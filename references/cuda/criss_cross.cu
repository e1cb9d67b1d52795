// The official CCNet's criss-cross op (Huang et al., "CCNet: Criss-Cross Attention for Semantic
// Segmentation", ICCV 2019) as plain CUDA kernels, in its weight layout (N, H + W - 1, H, W).
//
// Entry z of the criss-cross of (y, x): z < W is (y, z) in the row; z >= W is the column
// position i = z - W, skipping y itself (i < y -> (i, x), else (i + 1, x)).
//
// All six computations (ca_weight and ca_map, forward and backward) are one of three element
// functions over contiguous float32 NCHW tensors. Each element function is __host__ __device__,
// so the CUDA kernels and the host loops exported beside them compute the same sums in the same
// order: the host loops let the algorithm be checked on machines without a GPU.
#include <cuda_runtime.h>

struct Dims {
    int n, c, h, w;  // the feature maps are (n, c, h, w); the weight is (n, h + w - 1, h, w)
};

__host__ __device__ inline int entries(Dims d) { return d.h + d.w - 1; }

__host__ __device__ inline long long plane(Dims d) { return (long long)d.h * d.w; }

// Flat index i over (n, k, h, w), with k channels or entries, split into its coordinates.
struct Coord {
    long long n;
    int k, y, x;
};

__host__ __device__ inline Coord split(long long i, int k_count, Dims d)
{
    Coord p;
    p.x = (int)(i % d.w);
    p.y = (int)((i / d.w) % d.h);
    p.k = (int)((i / plane(d)) % k_count);
    p.n = i / (plane(d) * k_count);
    return p;
}

// The spatial offset y * w + x of entry z of the criss-cross of (y, x).
__host__ __device__ inline long long cross_offset(Dims d, int z, int y, int x)
{
    if (z < d.w) return (long long)y * d.w + z;
    int i = z - d.w;
    return (long long)(i < y ? i : i + 1) * d.w + x;
}

// out[n, z, y, x] = sum_c a[n, c, y, x] * b[n, c, entry z of (y, x)]
// ca_weight forward (a = t, b = f) and ca_map's weight gradient (a = dout, b = g).
struct ChannelDot {
    __host__ __device__ static long long count(Dims d) { return (long long)d.n * entries(d) * plane(d); }

    __host__ __device__ static float at(const float* a, const float* b, Dims d, long long i)
    {
        Coord p = split(i, entries(d), d);
        const float* pa = a + p.n * d.c * plane(d) + (long long)p.y * d.w + p.x;
        const float* pb = b + p.n * d.c * plane(d) + cross_offset(d, p.k, p.y, p.x);
        float sum = 0.f;
        for (int c = 0; c < d.c; ++c) sum += pa[c * plane(d)] * pb[c * plane(d)];
        return sum;
    }
};

// out[n, c, y, x] = sum_z w[n, z, y, x] * b[n, c, entry z of (y, x)]
// ca_map forward (w = weight, b = g) and ca_weight's gradient of t (w = dweight, b = f).
struct CrossGather {
    __host__ __device__ static long long count(Dims d) { return (long long)d.n * d.c * plane(d); }

    __host__ __device__ static float at(const float* w, const float* b, Dims d, long long i)
    {
        Coord p = split(i, d.c, d);
        const float* pw = w + p.n * entries(d) * plane(d) + (long long)p.y * d.w + p.x;
        const float* pb = b + (p.n * d.c + p.k) * plane(d);
        float sum = 0.f;
        for (int z = 0; z < entries(d); ++z) sum += pw[z * plane(d)] * pb[cross_offset(d, z, p.y, p.x)];
        return sum;
    }
};

// The transpose of CrossGather: out[n, c, y, x] = sum of w[n, z, y', x'] * b[n, c, y', x'] over
// every (y', x') whose entry z is (y, x): the whole row y (z = x) and column x without y itself.
// ca_weight's gradient of f (w = dweight, b = t) and ca_map's gradient of g (w = weight, b = dout).
struct CrossScatter {
    __host__ __device__ static long long count(Dims d) { return (long long)d.n * d.c * plane(d); }

    __host__ __device__ static float at(const float* w, const float* b, Dims d, long long i)
    {
        Coord p = split(i, d.c, d);
        const float* pw = w + p.n * entries(d) * plane(d);
        const float* pb = b + (p.n * d.c + p.k) * plane(d);
        float sum = 0.f;
        for (int x = 0; x < d.w; ++x) {
            long long pos = (long long)p.y * d.w + x;
            sum += pw[p.x * plane(d) + pos] * pb[pos];
        }
        for (int y = 0; y < d.h; ++y) {
            if (y == p.y) continue;
            int z = d.w + (p.y < y ? p.y : p.y - 1);
            long long pos = (long long)y * d.w + p.x;
            sum += pw[z * plane(d) + pos] * pb[pos];
        }
        return sum;
    }
};

template <class Op>
__global__ void element_kernel(const float* a, const float* b, float* out, Dims d, long long total)
{
    long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step)
        out[i] = Op::at(a, b, d, i);
}

// Fills out with Op on GPU `device` (launched on stream, a stream of that device) or, for device -1,
// in a host loop. The statically linked runtime keeps its own current device, so it is set here:
// the pointers belong to `device`, whichever GPU the caller's runtime has current.
// Returns a cudaError_t value; 0 is success.
template <class Op>
int run(int device, void* stream, const float* a, const float* b, float* out, Dims d)
{
    long long total = Op::count(d);
    if (device < 0) {
        for (long long i = 0; i < total; ++i) out[i] = Op::at(a, b, d, i);
        return 0;
    }
    if (total == 0) return 0;
    cudaError_t err = cudaSetDevice(device);
    if (err != cudaSuccess) return (int)err;
    const int threads = 256;
    long long blocks = (total + threads - 1) / threads;
    if (blocks > (1 << 20)) blocks = 1 << 20;  // the grid-stride loop covers the rest
    element_kernel<Op><<<(unsigned)blocks, threads, 0, (cudaStream_t)stream>>>(a, b, out, d, total);
    return (int)cudaGetLastError();
}

extern "C" {

// ca_weight: t, f (n, c, h, w) -> weight (n, h + w - 1, h, w).
int cc_weight_forward(int device, void* stream, const float* t, const float* f, float* weight,
                      int n, int c, int h, int w)
{
    return run<ChannelDot>(device, stream, t, f, weight, Dims{n, c, h, w});
}

// ca_weight backward: dweight (n, h + w - 1, h, w) -> dt, df (n, c, h, w).
int cc_weight_backward(int device, void* stream, const float* dweight, const float* t, const float* f,
                       float* dt, float* df, int n, int c, int h, int w)
{
    Dims d{n, c, h, w};
    int err = run<CrossGather>(device, stream, dweight, f, dt, d);
    return err ? err : run<CrossScatter>(device, stream, dweight, t, df, d);
}

// ca_map: weight (n, h + w - 1, h, w), g (n, c, h, w) -> out (n, c, h, w).
int cc_map_forward(int device, void* stream, const float* weight, const float* g, float* out,
                   int n, int c, int h, int w)
{
    return run<CrossGather>(device, stream, weight, g, out, Dims{n, c, h, w});
}

// ca_map backward: dout (n, c, h, w) -> dweight (n, h + w - 1, h, w), dg (n, c, h, w).
int cc_map_backward(int device, void* stream, const float* dout, const float* weight, const float* g,
                    float* dweight, float* dg, int n, int c, int h, int w)
{
    Dims d{n, c, h, w};
    int err = run<ChannelDot>(device, stream, dout, g, dweight, d);
    return err ? err : run<CrossScatter>(device, stream, weight, dout, dg, d);
}

// 0 when this library's CUDA runtime can reach a GPU through the installed driver, else the error.
int cc_runtime_check(void)
{
    int count = 0;
    int err = (int)cudaGetDeviceCount(&count);
    return err ? err : (count > 0 ? 0 : (int)cudaErrorNoDevice);
}

const char* cc_error_string(int code) { return cudaGetErrorString((cudaError_t)code); }

}
