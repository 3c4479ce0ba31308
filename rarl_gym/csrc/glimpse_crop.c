/* The env's two hot loops on the CPU (see rarl_gym/native.py): the glimpse crop as one sparse pass
 * over a channels-last feature map, and the read of a batch of float16 feature maps from the
 * cache file into channels-last float32.
 *
 * 1. glimpse_crop_nhwc
 * out[n, c, i, j] = sum_y sum_x wy[n, i, y] * wx[n, j, x] * f[img[n], y, x, c]
 *
 *   f      [B, H, W, C]  float32, or float16 when half != 0; channels-last (one row of C values per map cell)
 *   img    [N]           int64, the map of each region n (regions n = b * K + k)
 *   boxes  [N, 4]        float32, (x1, y1, x2, y2) in image coordinates [-1, 1]
 *   out    [N, C, S, S]  float32
 *   means  [N, C]        float32 or NULL: the mean of out over its S x S bins (what a linear
 *                        region scorer reads), at no extra pass
 *
 * wy [S, H] and wx [S, W] are torchvision roi_align's bilinear weights (aligned=True; adaptive
 * sampling grid unless sampling_ratio > 0), computed here per region.
 *
 * The weights are separable and sparse (a bin touches a few rows and columns), so every output
 * bin is a short weighted sum of contiguous channel rows: a handful of vectorised multiply-adds
 * per output value instead of the H * W of a dense matrix product. (Non-temporal stores of the
 * output were tried: 20 % slower here.) Regions [start, stop) only,
 * so that callers can split the work over threads (the call holds no Python lock).
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__F16C__) || defined(__AVX__)
#include <immintrin.h>
#endif

static inline float half_to_float(uint16_t h)
{
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
    if (exp == 0x1fu) {
        bits = sign | 0x7f800000u | (mant << 13); /* inf / nan */
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else { /* subnormal: normalise */
        exp = 113u;
        while (!(mant & 0x400u)) mant <<= 1, --exp;
        bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
#endif
}

/* acc[c] = sum_t wt[t] * src_t[c] for c < C, src_t = base + off[t] (C contiguous values each):
 * weighted_sum for float32 maps, weighted_sum_half for float16 ones (converted on load: half the
 * memory traffic). With AVX/FMA/F16C, 32 channels stay in 4 registers across all taps. */
#if defined(__AVX__) && defined(__FMA__) && defined(__F16C__)
#define VECTOR_SUMS 1
#define LOAD8_FLOAT(p) _mm256_loadu_ps(p)
#define LOAD8_HALF(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#endif
#define AS_FLOAT(x) (x)

#define DEFINE_WEIGHTED_SUM(NAME, T, LOAD8, TO_FLOAT)                                                          \
    static void NAME(float *restrict acc, const T *restrict base, const int64_t *restrict off,                 \
                     const float *restrict wt, int64_t taps, int64_t C)                                        \
    {                                                                                                          \
        int64_t c0 = 0;                                                                                        \
        VECTOR_BLOCKS(LOAD8)                                                                                   \
        if (c0 < C) {                                                                                          \
            memset(acc + c0, 0, sizeof(float) * (size_t)(C - c0));                                             \
            for (int64_t t = 0; t < taps; ++t) {                                                               \
                const float v = wt[t];                                                                         \
                const T *restrict src = base + off[t];                                                         \
                for (int64_t c = c0; c < C; ++c) acc[c] += v * TO_FLOAT(src[c]);                               \
            }                                                                                                  \
        }                                                                                                      \
    }

#ifdef VECTOR_SUMS
#define VECTOR_BLOCKS(LOAD8)                                                                                   \
    for (; c0 + 32 <= C; c0 += 32) {                                                                           \
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps(); \
        for (int64_t t = 0; t < taps; ++t) {                                                                   \
            const __m256 v = _mm256_set1_ps(wt[t]);                                                            \
            a0 = _mm256_fmadd_ps(v, LOAD8(base + off[t] + c0), a0);                                            \
            a1 = _mm256_fmadd_ps(v, LOAD8(base + off[t] + c0 + 8), a1);                                        \
            a2 = _mm256_fmadd_ps(v, LOAD8(base + off[t] + c0 + 16), a2);                                       \
            a3 = _mm256_fmadd_ps(v, LOAD8(base + off[t] + c0 + 24), a3);                                       \
        }                                                                                                      \
        _mm256_storeu_ps(acc + c0, a0);                                                                        \
        _mm256_storeu_ps(acc + c0 + 8, a1);                                                                    \
        _mm256_storeu_ps(acc + c0 + 16, a2);                                                                   \
        _mm256_storeu_ps(acc + c0 + 24, a3);                                                                   \
    }
#else
#define VECTOR_BLOCKS(LOAD8)
#endif

DEFINE_WEIGHTED_SUM(weighted_sum, float, LOAD8_FLOAT, AS_FLOAT)
DEFINE_WEIGHTED_SUM(weighted_sum_half, uint16_t, LOAD8_HALF, half_to_float)

/* w[i * cells + c] (i < S): torchvision roi_align's (aligned=True) weights of map cell c in output
 * bin i along one axis, for the interval [lo, hi] in image coordinates [-1, 1]; the same
 * float32 arithmetic as rarl_gym.glimpse._axis_weights. */
static void axis_weights(float lo, float hi, int64_t cells, int64_t S, int sampling_ratio, float *restrict w)
{
    const float half = (float)cells / 2.0f;
    const float start = (lo + 1.0f) * half - 0.5f;
    const float length = (hi - lo) * half;
    const float bin = length / (float)S;
    const int64_t n = sampling_ratio > 0 ? sampling_ratio : (int64_t)ceilf(length / (float)S);
    const float step = bin / (float)(n > 0 ? n : 1), scale = 1.0f / (float)(n > 0 ? n : 1);
    memset(w, 0, sizeof(float) * (size_t)(S * cells));
    for (int64_t i = 0; i < S; ++i) {
        for (int64_t j = 0; j < n; ++j) {
            float pos = start + (float)i * bin + ((float)j + 0.5f) * step;
            if (pos < -1.0f || pos > (float)cells) continue;
            if (pos < 0.0f) pos = 0.0f;
            float low = floorf(pos);
            if (low >= (float)(cells - 1)) low = (float)(cells - 1), pos = low;
            const float frac = pos - low;
            const int64_t l = (int64_t)low, h = l + 1 < cells ? l + 1 : cells - 1;
            w[i * cells + l] += (1.0f - frac) * scale;
            w[i * cells + h] += frac * scale;
        }
    }
}

int glimpse_crop_nhwc(const void *restrict f, const int64_t *restrict img, const float *restrict boxes,
                      float *restrict out, float *restrict means, int64_t start, int64_t stop,
                      int64_t C, int64_t H, int64_t W, int64_t S, int64_t sampling_ratio, int64_t half)
{
    const int64_t SS = S * S;
    /* the taps of one output bin (map cell offset, weight): at most H * W */
    int64_t *off = (int64_t *)malloc(sizeof(int64_t) * (size_t)(H * W));
    float *wt = (float *)malloc(sizeof(float) * (size_t)(H * W));
    float *acc = (float *)malloc(sizeof(float) * (size_t)(SS * C)); /* one region, [S*S, C] */
    float *wy = (float *)malloc(sizeof(float) * (size_t)(S * H));
    float *wx = (float *)malloc(sizeof(float) * (size_t)(S * W));
    if (off == NULL || wt == NULL || acc == NULL || wy == NULL || wx == NULL) {
        free(off), free(wt), free(acc), free(wy), free(wx);
        return 1;
    }
    for (int64_t n = start; n < stop; ++n) {
        const int64_t map = img[n] * H * W * C; /* the region's map, in elements */
        const float *box = boxes + 4 * n; /* x1, y1, x2, y2 */
        axis_weights(box[1], box[3], H, S, (int)sampling_ratio, wy);
        axis_weights(box[0], box[2], W, S, (int)sampling_ratio, wx);
        for (int64_t i = 0; i < S; ++i) {
            for (int64_t j = 0; j < S; ++j) {
                int64_t taps = 0;
                for (int64_t y = 0; y < H; ++y) {
                    const float vy = wy[i * H + y];
                    if (vy == 0.0f) continue;
                    for (int64_t x = 0; x < W; ++x) {
                        const float v = vy * wx[j * W + x];
                        if (v == 0.0f) continue;
                        off[taps] = (y * W + x) * C;
                        wt[taps++] = v;
                    }
                }
                if (half)
                    weighted_sum_half(acc + (i * S + j) * C, (const uint16_t *)f + map, off, wt, taps, C);
                else
                    weighted_sum(acc + (i * S + j) * C, (const float *)f + map, off, wt, taps, C);
            }
        }
        float *restrict o = out + n * C * SS;
        for (int64_t c = 0; c < C; ++c)
            for (int64_t q = 0; q < SS; ++q) o[c * SS + q] = acc[q * C + c];
        if (means != NULL) { /* the region's mean over its S x S bins, [C] */
            float *restrict m = means + n * C;
            for (int64_t c = 0; c < C; ++c) m[c] = acc[c];
            for (int64_t q = 1; q < SS; ++q)
                for (int64_t c = 0; c < C; ++c) m[c] += acc[q * C + c];
            for (int64_t c = 0; c < C; ++c) m[c] /= (float)SS;
        }
    }
    free(off), free(wt), free(acc), free(wy), free(wx);
    return 0;
}

/* 2. read_maps_nhwc
 *
 * dst[b, p, c] = file[index[b], c, p] for b in [start, stop): rows of a raw float16 array
 * [N, C, P] (P = H * W) read with pread from the open file fd and transposed to channels-last,
 * as float16 (half != 0) or converted to float32. Returns 0, or the errno of a failed read (-1: the file is too short). */
#define TILE 32

int read_maps_nhwc(int fd, const int64_t *restrict index, void *restrict dst, int64_t start, int64_t stop, int64_t C, int64_t P, int64_t half)
{
    const size_t row = (size_t)(C * P) * sizeof(uint16_t);
    uint16_t *buf = (uint16_t *)malloc(row);
    if (buf == NULL) return ENOMEM;
    for (int64_t b = start; b < stop; ++b) {
        size_t done = 0;
        while (done < row) {
            ssize_t got = pread(fd, (char *)buf + done, row - done, (off_t)(index[b] * (int64_t)row + (int64_t)done));
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) {
                free(buf);
                return got < 0 ? errno : -1;
            }
            done += (size_t)got;
        }
        /* transpose [C, P] -> [P, C] tile by tile, so that reads and writes both stay in L1 */
        for (int64_t c0 = 0; c0 < C; c0 += TILE) {
            const int64_t c1 = c0 + TILE < C ? c0 + TILE : C;
            for (int64_t p0 = 0; p0 < P; p0 += TILE) {
                const int64_t p1 = p0 + TILE < P ? p0 + TILE : P;
                if (half) {
                    uint16_t *restrict d = (uint16_t *)dst + b * P * C;
                    for (int64_t p = p0; p < p1; ++p)
                        for (int64_t c = c0; c < c1; ++c) d[p * C + c] = buf[c * P + p];
                } else {
                    float *restrict d = (float *)dst + b * P * C;
                    for (int64_t p = p0; p < p1; ++p)
                        for (int64_t c = c0; c < c1; ++c) d[p * C + c] = half_to_float(buf[c * P + p]);
                }
            }
        }
    }
    free(buf);
    return 0;
}
