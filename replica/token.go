package replica

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrBadToken is returned by ParseToken for text that is not a token.
var ErrBadToken = errors.New("replica: bad consistency token")

// Token is a read-your-writes consistency token: a position in the
// primary's write-ahead log (a PostgreSQL LSN) taken after a write
// committed. A read carrying a token (see WithToken) runs only on a replica
// that has replayed at least that far, else on the primary, so it sees the
// write. The zero Token means "no token".
//
// A Token is a plain value: its String form ("16/B374D848", the pg_lsn text
// format) is safe to put in a cookie or a header and comes back through
// ParseToken; it also implements encoding.TextMarshaler and
// encoding.TextUnmarshaler, so it works in JSON.
type Token uint64

// String returns the token in pg_lsn text form, "X/X" in upper-case hex;
// the zero Token is "0/0".
func (t Token) String() string {
	var b [17]byte
	out := strconv.AppendUint(b[:0], uint64(t)>>32, 16)
	out = append(out, '/')
	out = strconv.AppendUint(out, uint64(t)&0xFFFFFFFF, 16)
	return strings.ToUpper(string(out))
}

// IsZero reports whether t is the zero Token (no token).
func (t Token) IsZero() bool { return t == 0 }

// ParseToken parses a token from its String form (the pg_lsn text format:
// two hex numbers of at most 8 digits separated by '/'). Anything else,
// including surrounding space, is rejected with an error wrapping
// ErrBadToken.
func ParseToken(s string) (Token, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("%w: %q has no '/'", ErrBadToken, clip(s))
	}
	h, err := parseHex32(hi)
	if err != nil {
		return 0, fmt.Errorf("%w: %q: high part: %v", ErrBadToken, clip(s), err)
	}
	l, err := parseHex32(lo)
	if err != nil {
		return 0, fmt.Errorf("%w: %q: low part: %v", ErrBadToken, clip(s), err)
	}
	return Token(h<<32 | l), nil
}

func parseHex32(s string) (uint64, error) {
	if len(s) == 0 || len(s) > 8 {
		return 0, errors.New("want 1 to 8 hex digits")
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, fmt.Errorf("%q is not a hex digit", s[i])
		}
		v = v<<4 | uint64(c)
	}
	return v, nil
}

// clip shortens untrusted input quoted in an error.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// MarshalText implements encoding.TextMarshaler.
func (t Token) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParseToken.
func (t *Token) UnmarshalText(b []byte) error {
	v, err := ParseToken(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

type tokenKey struct{}

type primaryKey struct{}

// WithToken returns a context whose reads see at least the writes that
// token was taken after. A later token replaces an earlier one. The zero
// Token leaves ctx as it is.
func WithToken(ctx context.Context, token Token) context.Context {
	if token.IsZero() {
		return ctx
	}
	return context.WithValue(ctx, tokenKey{}, token)
}

// TokenFrom returns the token WithToken put in ctx, or the zero Token.
func TokenFrom(ctx context.Context) Token {
	t, _ := ctx.Value(tokenKey{}).(Token)
	return t
}

// Primary returns a context that sends every statement run with it to the
// primary, whatever IsReadOnly says: for a read that must see the latest
// data, or a SELECT calling a function that writes.
func Primary(ctx context.Context) context.Context {
	return context.WithValue(ctx, primaryKey{}, true)
}

func isPrimary(ctx context.Context) bool {
	b, _ := ctx.Value(primaryKey{}).(bool)
	return b
}
