/*
 * json_validate.h — a JSON Schema validator for tests (independent of
 * src/infer/json_constraint.c: it reads the raw schema JSON). Keywords:
 * $ref (#, #/$defs, #/definitions), anyOf, oneOf (exactly one), allOf,
 * nullable, type (name or list), enum, const, min/maxLength (code points),
 * minimum / maximum / exclusive* (numbers or draft-4 booleans), properties,
 * required, additionalProperties (false or a schema), items, min/maxItems.
 * Included by the test files that need it (static functions).
 */
#ifndef PT_JSON_VALIDATE_H
#define PT_JSON_VALIDATE_H

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

static size_t jv_utf8_len(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((uint8_t)s[i] & 0xC0) != 0x80;
    return k;
}

static json_t *jv_resolve(json_t *root, json_t *sch) {
    json_t *r = json_object_get(sch, "$ref");
    if (!json_is_string(r))
        return sch;
    const char *ref = json_string_value(r);
    if (!strcmp(ref, "#"))
        return root;
    if (!strncmp(ref, "#/$defs/", 8))
        return json_object_get(json_object_get(root, "$defs"), ref + 8);
    if (!strncmp(ref, "#/definitions/", 14))
        return json_object_get(json_object_get(root, "definitions"), ref + 14);
    return NULL;
}

static bool jv_is_integer(const json_t *v) {
    return json_is_integer(v) ||
           (json_is_real(v) && floor(json_real_value(v)) == json_real_value(v));
}

static bool jv_type_ok(const char *t, const json_t *v) {
    if (!strcmp(t, "string"))
        return json_is_string(v);
    if (!strcmp(t, "number"))
        return json_is_number(v);
    if (!strcmp(t, "integer"))
        return jv_is_integer(v);
    if (!strcmp(t, "boolean"))
        return json_is_boolean(v);
    if (!strcmp(t, "null"))
        return json_is_null(v);
    if (!strcmp(t, "object"))
        return json_is_object(v);
    if (!strcmp(t, "array"))
        return json_is_array(v);
    return false;
}

static bool jv_validate(json_t *root, json_t *sch, json_t *v) {
    if (json_is_true(sch))
        return true;
    if (!json_is_object(sch))
        return false;
    if (json_object_get(sch, "$ref"))
        return jv_validate(root, jv_resolve(root, sch), v);
    if (json_is_true(json_object_get(sch, "nullable")) && json_is_null(v))
        return true;
    json_t *a;
    size_t i;
    json_t *e;
    if ((a = json_object_get(sch, "anyOf"))) {
        json_array_foreach(a, i, e) {
            if (jv_validate(root, e, v))
                return true;
        }
        return false;
    }
    if ((a = json_object_get(sch, "oneOf"))) {
        int k = 0;
        json_array_foreach(a, i, e) {
            k += jv_validate(root, e, v);
        }
        return k == 1;
    }
    if ((a = json_object_get(sch, "allOf"))) {
        json_array_foreach(a, i, e) {
            if (!jv_validate(root, e, v))
                return false;
        }
    }
    json_t *ty = json_object_get(sch, "type");
    if (json_is_string(ty) && !jv_type_ok(json_string_value(ty), v))
        return false;
    if (json_is_array(ty)) {
        bool ok = false;
        json_array_foreach(ty, i, e) {
            ok = ok || jv_type_ok(json_string_value(e), v);
        }
        if (!ok)
            return false;
    }
    if ((a = json_object_get(sch, "enum"))) {
        bool ok = false;
        json_array_foreach(a, i, e) {
            ok = ok || json_equal(e, v);
        }
        if (!ok)
            return false;
    }
    if ((a = json_object_get(sch, "const")) && !json_equal(a, v))
        return false;
    if (json_is_string(v)) {
        size_t n = jv_utf8_len(json_string_value(v), json_string_length(v));
        if ((a = json_object_get(sch, "minLength")) && n < (size_t)json_integer_value(a))
            return false;
        if ((a = json_object_get(sch, "maxLength")) && n > (size_t)json_integer_value(a))
            return false;
    }
    if (json_is_number(v)) {
        double x = json_number_value(v);
        json_t *em = json_object_get(sch, "exclusiveMinimum"),
               *eM = json_object_get(sch, "exclusiveMaximum");
        if ((a = json_object_get(sch, "minimum")) &&
            (json_is_true(em) ? x <= json_number_value(a) : x < json_number_value(a)))
            return false;
        if ((a = json_object_get(sch, "maximum")) &&
            (json_is_true(eM) ? x >= json_number_value(a) : x > json_number_value(a)))
            return false;
        if (json_is_number(em) && x <= json_number_value(em))
            return false;
        if (json_is_number(eM) && x >= json_number_value(eM))
            return false;
    }
    if (json_is_object(v)) {
        json_t *props = json_object_get(sch, "properties"),
               *ap = json_object_get(sch, "additionalProperties");
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) {
            json_t *ps = json_object_get(props, k);
            if (ps) {
                if (!jv_validate(root, ps, x))
                    return false;
            } else if (json_is_false(ap) || (json_is_object(ap) && !jv_validate(root, ap, x))) {
                return false;
            }
        }
        json_array_foreach(json_object_get(sch, "required"), i, e) {
            if (!json_object_get(v, json_string_value(e)))
                return false;
        }
    }
    if (json_is_array(v)) {
        json_t *it = json_object_get(sch, "items");
        size_t n = json_array_size(v);
        if ((a = json_object_get(sch, "minItems")) && n < (size_t)json_integer_value(a))
            return false;
        if ((a = json_object_get(sch, "maxItems")) && n > (size_t)json_integer_value(a))
            return false;
        json_array_foreach(v, i, e) {
            if (it && !jv_validate(root, it, e))
                return false;
        }
    }
    return true;
}

#endif
