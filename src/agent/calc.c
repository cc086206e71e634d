/*
 * calc.c — the calculator tool: exact arithmetic by recursive descent over
 * rationals (128-bit numerator/denominator, always reduced, overflow
 * checked). Never evaluates code: the grammar is numbers, + - * / % ^ **,
 * parentheses, unary signs and abs(); anything else is an error naming the
 * column.
 *
 *   expr  := term (('+' | '-') term)*
 *   term  := unary (('*' | '/' | '%') unary)*
 *   unary := ('+' | '-') unary | power
 *   power := primary (('^' | '**') unary)?      right-associative
 *   primary := NUMBER | '(' expr ')' | 'abs' '(' expr ')'
 */
#include <string.h>

#include "puyu/pu_agent.h"

typedef __int128 i128;

typedef struct {
    i128 n, d; /* d > 0, gcd(n, d) = 1 */
} rat;

typedef struct {
    const char *s, *p;
    pu_status st;
    int depth;
} calc;

static i128 i128_abs(i128 x) {
    return x < 0 ? -x : x;
}

static i128 gcd(i128 a, i128 b) {
    a = i128_abs(a);
    b = i128_abs(b);
    while (b) {
        i128 t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static bool fail(calc *c, pu_status code, const char *msg) {
    if (c->st == PU_OK)
        c->st = pu_err_set(code, "calculator: %s at column %d", msg, (int)(c->p - c->s) + 1);
    return false;
}

static bool mk(calc *c, i128 n, i128 d, rat *out) {
    if (d == 0)
        return fail(c, PU_ERR_RANGE, "division by zero");
    if (d < 0) {
        if (n == -n && n != 0)
            return fail(c, PU_ERR_RANGE, "overflow");
        n = -n;
        d = -d;
    }
    i128 g = gcd(n, d);
    if (g > 1) {
        n /= g;
        d /= g;
    }
    out->n = n;
    out->d = d;
    return true;
}

static bool mul_ok(i128 a, i128 b, i128 *r) {
    return !__builtin_mul_overflow(a, b, r);
}
static bool add_ok(i128 a, i128 b, i128 *r) {
    return !__builtin_add_overflow(a, b, r);
}

static bool r_add(calc *c, rat a, rat b, bool sub, rat *out) {
    i128 g = gcd(a.d, b.d), x, y, d, bn = sub ? -b.n : b.n;
    if (!mul_ok(a.n, b.d / g, &x) || !mul_ok(bn, a.d / g, &y) || !add_ok(x, y, &x) ||
        !mul_ok(a.d / g, b.d, &d))
        return fail(c, PU_ERR_RANGE, "overflow (beyond 128-bit rationals)");
    return mk(c, x, d, out);
}

static bool r_mul(calc *c, rat a, rat b, rat *out) {
    i128 g1 = gcd(a.n, b.d), g2 = gcd(b.n, a.d), n, d;
    if (g1 == 0)
        g1 = 1;
    if (g2 == 0)
        g2 = 1;
    if (!mul_ok(a.n / g1, b.n / g2, &n) || !mul_ok(a.d / g2, b.d / g1, &d))
        return fail(c, PU_ERR_RANGE, "overflow (beyond 128-bit rationals)");
    return mk(c, n, d, out);
}

static bool r_div(calc *c, rat a, rat b, rat *out) {
    if (b.n == 0)
        return fail(c, PU_ERR_RANGE, "division by zero");
    rat inv = {b.d, b.n};
    if (inv.d < 0) {
        inv.n = -inv.n;
        inv.d = -inv.d;
    }
    return r_mul(c, a, inv, out);
}

static void ws(calc *c) {
    while (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')
        c->p++;
}

static bool expr(calc *c, rat *out);
static bool unary(calc *c, rat *out);

static bool number(calc *c, rat *out) {
    i128 n = 0, d = 1;
    bool any = false;
    while (*c->p >= '0' && *c->p <= '9') {
        if (!mul_ok(n, 10, &n) || !add_ok(n, *c->p - '0', &n))
            return fail(c, PU_ERR_RANGE, "number too large");
        c->p++;
        any = true;
        if (*c->p == '_')
            c->p++;
    }
    if (*c->p == '.') {
        c->p++;
        while (*c->p >= '0' && *c->p <= '9') {
            if (!mul_ok(n, 10, &n) || !add_ok(n, *c->p - '0', &n) || !mul_ok(d, 10, &d))
                return fail(c, PU_ERR_RANGE, "number too long");
            c->p++;
            any = true;
        }
    }
    if (!any)
        return fail(c, PU_ERR_FORMAT, "expected a number");
    if (*c->p == 'e' || *c->p == 'E') {
        const char *save = c->p++;
        int sign = 1;
        if (*c->p == '+' || *c->p == '-')
            sign = *c->p++ == '-' ? -1 : 1;
        if (!(*c->p >= '0' && *c->p <= '9')) {
            c->p = save;
            return fail(c, PU_ERR_FORMAT, "bad exponent");
        }
        int e = 0;
        while (*c->p >= '0' && *c->p <= '9') {
            e = e * 10 + (*c->p++ - '0');
            if (e > 38)
                return fail(c, PU_ERR_RANGE, "exponent too large");
        }
        for (int i = 0; i < e; i++)
            if (!mul_ok(sign > 0 ? n : d, 10, sign > 0 ? &n : &d))
                return fail(c, PU_ERR_RANGE, "number too large");
    }
    return mk(c, n, d, out);
}

static bool primary(calc *c, rat *out) {
    ws(c);
    if (*c->p == '(') {
        c->p++;
        if (!expr(c, out))
            return false;
        ws(c);
        if (*c->p != ')')
            return fail(c, PU_ERR_FORMAT, "expected ')'");
        c->p++;
        return true;
    }
    if (!strncmp(c->p, "abs", 3)) {
        c->p += 3;
        ws(c);
        if (*c->p != '(')
            return fail(c, PU_ERR_FORMAT, "expected '(' after abs");
        if (!primary(c, out))
            return false;
        out->n = i128_abs(out->n);
        return true;
    }
    if ((*c->p >= '0' && *c->p <= '9') || *c->p == '.')
        return number(c, out);
    if (!*c->p)
        return fail(c, PU_ERR_FORMAT, "unexpected end of expression");
    return fail(c, PU_ERR_FORMAT, "unexpected character (only numbers, + - * / % ^ ( ) and abs)");
}

static bool power(calc *c, rat *out) {
    if (!primary(c, out))
        return false;
    ws(c);
    bool pw = false;
    if (*c->p == '^') {
        c->p++;
        pw = true;
    } else if (c->p[0] == '*' && c->p[1] == '*') {
        c->p += 2;
        pw = true;
    }
    if (!pw)
        return true;
    rat e;
    if (!unary(c, &e))
        return false;
    if (e.d != 1)
        return fail(c, PU_ERR_UNSUPPORTED, "non-integer exponent (the result would not be exact)");
    if (i128_abs(e.n) > 4096)
        return fail(c, PU_ERR_RANGE, "exponent too large");
    int k = (int)i128_abs(e.n);
    rat base = *out, acc = {1, 1};
    for (int i = 0; i < k; i++)
        if (!r_mul(c, acc, base, &acc))
            return false;
    if (e.n < 0)
        return r_div(c, (rat){1, 1}, acc, out);
    *out = acc;
    return true;
}

static bool unary(calc *c, rat *out) {
    ws(c);
    if (++c->depth > 200)
        return fail(c, PU_ERR_RANGE, "expression nested too deeply");
    bool ok;
    if (*c->p == '-' || *c->p == '+') {
        bool neg = *c->p++ == '-';
        ok = unary(c, out);
        if (ok && neg)
            out->n = -out->n;
    } else {
        ok = power(c, out);
    }
    c->depth--;
    return ok;
}

static bool term(calc *c, rat *out) {
    if (!unary(c, out))
        return false;
    for (;;) {
        ws(c);
        char op = *c->p;
        if ((op != '*' && op != '/' && op != '%') || (op == '*' && c->p[1] == '*'))
            return true;
        c->p++;
        rat b;
        if (!unary(c, &b))
            return false;
        if (op == '*' && !r_mul(c, *out, b, out))
            return false;
        if (op == '/' && !r_div(c, *out, b, out))
            return false;
        if (op == '%') {
            if (out->d != 1 || b.d != 1)
                return fail(c, PU_ERR_UNSUPPORTED, "% needs integers");
            if (b.n == 0)
                return fail(c, PU_ERR_RANGE, "modulo by zero");
            i128 m = out->n % b.n;
            if (m != 0 && ((m < 0) != (b.n < 0)))
                m += b.n; /* Python's sign convention */
            out->n = m;
        }
    }
}

static bool expr(calc *c, rat *out) {
    if (!term(c, out))
        return false;
    for (;;) {
        ws(c);
        char op = *c->p;
        if (op != '+' && op != '-')
            return true;
        c->p++;
        rat b;
        if (!term(c, &b))
            return false;
        if (!r_add(c, *out, b, op == '-', out))
            return false;
    }
}

static void put_i128(pu_str *s, i128 v) {
    char buf[64];
    int n = 0;
    bool neg = v < 0;
    unsigned __int128 u = neg ? (unsigned __int128)(-(v + 1)) + 1 : (unsigned __int128)v;
    do {
        buf[n++] = (char)('0' + (int)(u % 10));
        u /= 10;
    } while (u);
    if (neg)
        pu_str_putc(s, '-');
    while (n)
        pu_str_putc(s, buf[--n]);
}

pu_status pu_calc_eval(const char *e, pu_str *out) {
    pu_str_clear(out);
    calc c = {e, e, PU_OK, 0};
    rat r;
    if (!expr(&c, &r))
        return c.st;
    ws(&c);
    if (*c.p) {
        fail(&c, PU_ERR_FORMAT, "unexpected trailing text");
        return c.st;
    }
    put_i128(out, r.n);
    if (r.d == 1)
        return PU_OK;
    pu_str_putc(out, '/');
    put_i128(out, r.d);
    /* decimal expansion by long division: exact when it terminates in 15 digits */
    pu_str_puts(out, " (");
    pu_str dec = {0};
    i128 n = r.n < 0 ? -r.n : r.n, q = n / r.d, rem = n % r.d;
    if (r.n < 0)
        pu_str_putc(&dec, '-');
    put_i128(&dec, q);
    pu_str_putc(&dec, '.');
    int digits = 0;
    while (rem && digits < 15 && rem < ((i128)1 << 122)) {
        rem *= 10;
        pu_str_putc(&dec, (char)('0' + (int)(rem / r.d)));
        rem %= r.d;
        digits++;
    }
    pu_str_puts(out, rem ? "≈ " : "= ");
    pu_str_append(out, dec.p, dec.len);
    pu_str_free(&dec);
    pu_str_putc(out, ')');
    return PU_OK;
}
