/*
 * awq.c — AutoAWQ / LMDeploy AWQ checkpoints (config.json
 * "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": G,
 * "zero_point": true, "version": "gemm"}).
 *
 * A linear W (out, in) is stored as three tensors beside where W.weight
 * would be:
 *   X.qweight  I32 (in, out/8)    4-bit codes q, 8 per int32
 *   X.qzeros   I32 (in/G, out/8)  4-bit zero points z, 8 per int32
 *   X.scales   F16 (in/G, out)    scales s
 * W[o][i] = (q[i][o] - z[i/G][o]) * s[i/G][o]. The nibble order inside each
 * int32 is AutoAWQ's "gemm" packing (AWQ_ORDER [0, 2, 4, 6, 1, 3, 5, 7]:
 * nibble k (bits 4k..4k+3) holds column 8c + AWQ_ORDER[k]); so column 8c + j
 * is nibble AWQ_REVERSE_ORDER[j], AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]
 * (AutoAWQ's awq/utils/packing_utils.py unpack_awq / reverse_awq_order).
 *
 * puyu dequantizes each such matrix at load into an owned F32 tensor: the
 * values are exact ((q - z) is a small integer and s an f16, so the product
 * is exact in fp32); `puyu quantize` can then re-encode them in a ggml type.
 */
#include <jansson.h>
#include <string.h>
#include <strings.h>

#include "model/loaders.h"

static const int awq_reverse_order[8] = {0, 4, 1, 5, 2, 6, 3, 7};

pu_status pu_awq_read_config_(const char *cfg_path, int64_t *group_size) {
    *group_size = 0;
    json_error_t je;
    json_t *root = json_load_file(cfg_path, 0, &je);
    if (!root)
        return PU_OK; /* pu_config_load reports unreadable config.json itself */
    pu_status s = PU_OK;
    const json_t *q = json_object_get(root, "quantization_config");
    if (!q || !json_is_object(q))
        goto done;
    const char *meth = json_string_value(json_object_get(q, "quant_method"));
    if (!meth) {
        s = pu_err_set(PU_ERR_FORMAT, "%s: quantization_config has no string quant_method",
                       cfg_path);
        goto done;
    }
    if (strcasecmp(meth, "awq") != 0) {
        s = pu_err_set(PU_ERR_UNSUPPORTED,
                       "%s: quantization_config.quant_method \"%s\" is not supported (only awq)",
                       cfg_path, meth);
        goto done;
    }
    const json_t *bits = json_object_get(q, "bits");
    if (!bits)
        bits = json_object_get(q, "w_bit");
    const json_t *gs = json_object_get(q, "group_size");
    if (!gs)
        gs = json_object_get(q, "q_group_size");
    if (!json_is_integer(bits) || json_integer_value(bits) != 4) {
        s = pu_err_set(PU_ERR_UNSUPPORTED,
                       "%s: quantization_config.bits must be 4 for awq (found %s)", cfg_path,
                       json_is_integer(bits) ? "another value" : "none");
        goto done;
    }
    if (!json_is_integer(gs) || json_integer_value(gs) <= 0 || json_integer_value(gs) > 65536) {
        s = pu_err_set(PU_ERR_FORMAT,
                       "%s: quantization_config.group_size must be a positive integer", cfg_path);
        goto done;
    }
    const json_t *zp = json_object_get(q, "zero_point");
    if (zp && json_is_false(zp)) {
        s = pu_err_set(PU_ERR_UNSUPPORTED,
                       "%s: quantization_config.zero_point false (symmetric awq) is not supported",
                       cfg_path);
        goto done;
    }
    const char *ver = json_string_value(json_object_get(q, "version"));
    if (ver && strcasecmp(ver, "gemm") != 0) {
        s = pu_err_set(
            PU_ERR_UNSUPPORTED,
            "%s: quantization_config.version \"%s\" is not supported (gemm packing only)", cfg_path,
            ver);
        goto done;
    }
    *group_size = json_integer_value(gs);
done:
    json_decref(root);
    return s;
}

static inline uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline int nib(uint32_t w, int64_t col) {
    return (int)((w >> (4 * awq_reverse_order[col & 7])) & 15u);
}

void pu_awq_dequant_(float *dst, const uint8_t *qweight, const uint8_t *qzeros,
                     const uint8_t *scales, int64_t out, int64_t in, int64_t group) {
    int64_t ow = out / 8; /* int32 per packed row */
    for (int64_t i = 0; i < in; i++) {
        int64_t g = i / group;
        const uint8_t *qr = qweight + (size_t)(i * ow) * 4;
        const uint8_t *zr = qzeros + (size_t)(g * ow) * 4;
        const uint8_t *sr = scales + (size_t)(g * out) * 2;
        for (int64_t o = 0; o < out; o++) {
            int q = nib(rd32(qr + (o / 8) * 4), o), z = nib(rd32(zr + (o / 8) * 4), o);
            uint16_t h;
            memcpy(&h, sr + o * 2, 2);
            dst[o * in + i] = (float)(q - z) * pu_f16_to_f32(h);
        }
    }
}
