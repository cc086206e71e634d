/*
 * nf4.c — NF4 with double quantization, bitsandbytes' scheme (QLoRA's frozen
 * base weights; see pu_train.h):
 *   - elements in blocks of 64; absmax = max |x| of the block; each x / absmax
 *     (clamped to [-1, 1]) becomes the index of the nearest NF4 value
 *     (torch.bucketize against the midpoints of the table: a value exactly on
 *     a midpoint takes the lower index); two codes a byte, the first element
 *     of a pair in the high nibble;
 *   - double quantization (compress_statistics): offset = mean of the fp32
 *     absmaxes; absmax - offset quantized blockwise (blocks of 256) to the
 *     8-bit signed dynamic map (create_dynamic_map()), one fp32 scale (the
 *     block's max |.|) per 256 absmaxes;
 *   - dequantization: x = NF4[q] * (dyn8[qabsmax] * absmax2 + offset).
 * The tables are bitsandbytes' (NF4: csrc kernels / backends/utils.py;
 * dyn8: create_dynamic_map() evaluated by torch, printed with %.9g, which
 * round-trips float32 exactly).
 * About 4.127 bits per weight (0.5 byte + 1 byte per 64 + 4 bytes per 16384).
 */
#include <math.h>
#include <string.h>

#include "train/train_impl.h"

#define QB  64
#define QB2 256

const float pu_nf4_table[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

const float pu_nf4_dyn8[256] = {
    -0.992968738f,    -0.978906214f,    -0.96484375f,     -0.950781226f,
    -0.936718702f,    -0.922656238f,    -0.908593774f,    -0.89453125f,
    -0.880468726f,    -0.866406202f,    -0.852343738f,    -0.838281214f,
    -0.82421875f,     -0.810156226f,    -0.796093702f,    -0.782031238f,
    -0.767968774f,    -0.75390625f,     -0.739843786f,    -0.725781262f,
    -0.711718798f,    -0.697656274f,    -0.68359375f,     -0.669531286f,
    -0.655468762f,    -0.641406238f,    -0.627343774f,    -0.61328125f,
    -0.599218726f,    -0.585156262f,    -0.571093798f,    -0.557031274f,
    -0.54296875f,     -0.528906226f,    -0.514843762f,    -0.500781238f,
    -0.486718774f,    -0.47265625f,     -0.458593726f,    -0.444531262f,
    -0.430468738f,    -0.416406214f,    -0.40234375f,     -0.388281226f,
    -0.374218762f,    -0.360156238f,    -0.346093714f,    -0.33203125f,
    -0.317968726f,    -0.303906262f,    -0.289843738f,    -0.275781274f,
    -0.26171875f,     -0.247656256f,    -0.233593762f,    -0.219531253f,
    -0.205468744f,    -0.19140625f,     -0.177343741f,    -0.163281247f,
    -0.149218753f,    -0.135156244f,    -0.12109375f,     -0.107031256f,
    -0.0985937491f,   -0.0957812443f,   -0.0929687545f,   -0.0901562497f,
    -0.0873437524f,   -0.0845312476f,   -0.0817187428f,   -0.078906253f,
    -0.0760937482f,   -0.0732812509f,   -0.0704687461f,   -0.0676562563f,
    -0.0648437515f,   -0.0620312467f,   -0.0592187531f,   -0.0564062484f,
    -0.053593751f,    -0.05078125f,     -0.047968749f,    -0.0451562516f,
    -0.0423437469f,   -0.0395312496f,   -0.0367187522f,   -0.0339062475f,
    -0.0310937501f,   -0.0282812472f,   -0.0254687499f,   -0.0226562507f,
    -0.0198437497f,   -0.0170312505f,   -0.0142187504f,   -0.0114062503f,
    -0.00971874967f,  -0.00915624946f,  -0.00859375019f,  -0.00803124998f,
    -0.00746874977f,  -0.00690625003f,  -0.00634374982f,  -0.00578125007f,
    -0.00521875033f,  -0.00465624966f,  -0.00409374991f,  -0.00353124971f,
    -0.00296874996f,  -0.00240624999f,  -0.00184375001f,  -0.00128124992f,
    -0.000943750085f, -0.000831249985f, -0.00071875006f,  -0.000606250076f,
    -0.000493750034f, -0.000381250022f, -0.000268750038f, -0.000156250011f,
    -8.87499991e-05f, -6.62500024e-05f, -4.37499984e-05f, -2.12499981e-05f,
    -7.7499999e-06f,  -3.25000019e-06f, -5.50000038e-07f, 0.0f,
    5.50000038e-07f,  3.25000019e-06f,  7.7499999e-06f,   2.12499981e-05f,
    4.37499984e-05f,  6.62500024e-05f,  8.87499991e-05f,  0.000156250011f,
    0.000268750038f,  0.000381250022f,  0.000493750034f,  0.000606250076f,
    0.00071875006f,   0.000831249985f,  0.000943750085f,  0.00128124992f,
    0.00184375001f,   0.00240624999f,   0.00296874996f,   0.00353124971f,
    0.00409374991f,   0.00465624966f,   0.00521875033f,   0.00578125007f,
    0.00634374982f,   0.00690625003f,   0.00746874977f,   0.00803124998f,
    0.00859375019f,   0.00915624946f,   0.00971874967f,   0.0114062503f,
    0.0142187504f,    0.0170312505f,    0.0198437497f,    0.0226562507f,
    0.0254687499f,    0.0282812472f,    0.0310937501f,    0.0339062475f,
    0.0367187522f,    0.0395312496f,    0.0423437469f,    0.0451562516f,
    0.047968749f,     0.05078125f,      0.053593751f,     0.0564062484f,
    0.0592187531f,    0.0620312467f,    0.0648437515f,    0.0676562563f,
    0.0704687461f,    0.0732812509f,    0.0760937482f,    0.078906253f,
    0.0817187428f,    0.0845312476f,    0.0873437524f,    0.0901562497f,
    0.0929687545f,    0.0957812443f,    0.0985937491f,    0.107031256f,
    0.12109375f,      0.135156244f,     0.149218753f,     0.163281247f,
    0.177343741f,     0.19140625f,      0.205468744f,     0.219531253f,
    0.233593762f,     0.247656256f,     0.26171875f,      0.275781274f,
    0.289843738f,     0.303906262f,     0.317968726f,     0.33203125f,
    0.346093714f,     0.360156238f,     0.374218762f,     0.388281226f,
    0.40234375f,      0.416406214f,     0.430468738f,     0.444531262f,
    0.458593726f,     0.47265625f,      0.486718774f,     0.500781238f,
    0.514843762f,     0.528906226f,     0.54296875f,      0.557031274f,
    0.571093798f,     0.585156262f,     0.599218726f,     0.61328125f,
    0.627343774f,     0.641406238f,     0.655468762f,     0.669531286f,
    0.68359375f,      0.697656274f,     0.711718798f,     0.725781262f,
    0.739843786f,     0.75390625f,      0.767968774f,     0.782031238f,
    0.796093702f,     0.810156226f,     0.82421875f,      0.838281214f,
    0.852343738f,     0.866406202f,     0.880468726f,     0.89453125f,
    0.908593774f,     0.922656238f,     0.936718702f,     0.950781226f,
    0.96484375f,      0.978906214f,     0.992968738f,     1.0f,
};

/* torch.bucketize(x, (code[:-1] + code[1:]) / 2): the number of midpoints < x */
static int bucketize(float x, const float *code, int n) {
    int lo = 0, hi = n - 1; /* answer in [0, n-1] */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        float b = (code[mid] + code[mid + 1]) / 2;
        if (b < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void pu_nf4_quantize(pu_nf4 *q, const void *src, pu_dtype dt, int64_t n) {
    memset(q, 0, sizeof *q);
    q->n = n;
    int64_t nb = (n + QB - 1) / QB, nb2 = (nb + QB2 - 1) / QB2;
    q->codes = pu_calloc((size_t)((n + 1) / 2 + 1), 1);
    q->qabsmax = pu_malloc((size_t)(nb ? nb : 1));
    q->absmax2 = pu_malloc((size_t)(nb2 ? nb2 : 1) * sizeof(float));
    float *am = pu_malloc((size_t)(nb ? nb : 1) * sizeof(float));
    const pu_kernels *k = pu_kernels_get();
    float buf[QB];
    double sum = 0;
    for (int64_t b = 0; b < nb; b++) {
        int64_t i0 = b * QB, len = n - i0 < QB ? n - i0 : QB;
        k->to_f32[dt](buf, (const char *)src + i0 * (int64_t)pu_dtype_size(dt), len);
        float mx = 0;
        for (int64_t i = 0; i < len; i++)
            mx = fabsf(buf[i]) > mx ? fabsf(buf[i]) : mx;
        am[b] = mx;
        sum += mx;
        float inv = 1.0f / (mx > 1e-38f ? mx : 1e-38f);
        for (int64_t i = 0; i < len; i++) {
            float s = buf[i] * inv;
            s = s < -1 ? -1 : s > 1 ? 1 : s;
            int c = bucketize(s, pu_nf4_table, 16);
            int64_t e = i0 + i;
            q->codes[e / 2] |= (uint8_t)(e % 2 ? c : c << 4);
        }
    }
    q->offset = nb ? (float)(sum / (double)nb) : 0.0f;
    for (int64_t b2 = 0; b2 < nb2; b2++) {
        int64_t j0 = b2 * QB2, len = nb - j0 < QB2 ? nb - j0 : QB2;
        float mx = 0;
        for (int64_t j = 0; j < len; j++) {
            float v = fabsf(am[j0 + j] - q->offset);
            mx = v > mx ? v : mx;
        }
        q->absmax2[b2] = mx;
        float inv = 1.0f / (mx > 1e-38f ? mx : 1e-38f);
        for (int64_t j = 0; j < len; j++) {
            float s = (am[j0 + j] - q->offset) * inv;
            s = s < -1 ? -1 : s > 1 ? 1 : s;
            q->qabsmax[j0 + j] = (uint8_t)bucketize(s, pu_nf4_dyn8, 256);
        }
    }
    pu_free(am);
}

void pu_nf4_free(pu_nf4 *q) {
    if (!q)
        return;
    pu_free(q->codes);
    pu_free(q->qabsmax);
    pu_free(q->absmax2);
    memset(q, 0, sizeof *q);
}

int64_t pu_nf4_bytes(const pu_nf4 *q) {
    int64_t nb = (q->n + QB - 1) / QB;
    return (q->n + 1) / 2 + nb + (nb + QB2 - 1) / QB2 * 4;
}

void pu_nf4_dequant(const pu_nf4 *q, int64_t start, int64_t n, float *dst) {
    int64_t e = start, end = start + n;
    while (e < end) {
        int64_t b = e / QB, bend = (b + 1) * QB < end ? (b + 1) * QB : end;
        float a = pu_nf4_dyn8[q->qabsmax[b]] * q->absmax2[b / QB2] + q->offset;
        for (; e < bend; e++) {
            uint8_t byte = q->codes[e / 2];
            *dst++ = pu_nf4_table[e % 2 ? byte & 15 : byte >> 4] * a;
        }
    }
}
