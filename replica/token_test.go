package replica

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
)

func TestTokenRoundTrip(t *testing.T) {
	tests := []struct {
		in   string
		want Token
		str  string
	}{
		{"0/0", 0, "0/0"},
		{"16/B374D848", 0x16_B374D848, "16/B374D848"},
		{"16/b374d848", 0x16_B374D848, "16/B374D848"},
		{"0/1", 1, "0/1"},
		{"FFFFFFFF/FFFFFFFF", ^Token(0), "FFFFFFFF/FFFFFFFF"},
		{"00000001/00000000", 1 << 32, "1/0"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseToken(tc.in)
			if err != nil {
				t.Fatalf("ParseToken(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Fatalf("ParseToken(%q) = %#x, want %#x", tc.in, uint64(got), uint64(tc.want))
			}
			if got.String() != tc.str {
				t.Fatalf("String() = %q, want %q", got.String(), tc.str)
			}
		})
	}
}

func TestParseTokenRejectsGarbage(t *testing.T) {
	for _, in := range []string{
		"", "/", "0/", "/0", "16", "16/B374D848/1", " 16/1", "16/1 ", "g/1", "1/-1", "+1/1",
		"123456789/0", "0/123456789", "16/B374D848\x00", "０/1", "0x1/1", "%2F",
	} {
		t.Run(in, func(t *testing.T) {
			tok, err := ParseToken(in)
			if !errors.Is(err, ErrBadToken) {
				t.Fatalf("ParseToken(%q) = %v, %v; want ErrBadToken", in, tok, err)
			}
		})
	}
}

func TestTokenJSONAndContext(t *testing.T) {
	type cookie struct {
		T Token `json:"t"`
	}
	b, err := json.Marshal(cookie{T: 0x2_0000ABCD})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"t":"2/ABCD"}` {
		t.Fatalf("JSON = %s", b)
	}
	var back cookie
	if err := json.Unmarshal(b, &back); err != nil || back.T != 0x2_0000ABCD {
		t.Fatalf("round trip = %v, %v", back.T, err)
	}
	if err := json.Unmarshal([]byte(`{"t":"nope"}`), &back); !errors.Is(err, ErrBadToken) {
		t.Fatalf("bad JSON token: err = %v, want ErrBadToken", err)
	}

	ctx := context.Background()
	if WithToken(ctx, 0) != ctx {
		t.Fatal("WithToken with the zero token changed the context")
	}
	ctx = WithToken(WithToken(ctx, 5), 7)
	if got := TokenFrom(ctx); got != 7 {
		t.Fatalf("TokenFrom = %v, want 7 (the later token)", got)
	}
	if isPrimary(ctx) || !isPrimary(Primary(ctx)) {
		t.Fatal("Primary override not carried by the context")
	}
}

// FuzzParseToken checks that parsing never panics and that whatever parses
// prints back to text that parses to the same token.
func FuzzParseToken(f *testing.F) {
	for _, s := range []string{"0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF", "a/b", "", "1/", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrBadToken) {
				t.Fatalf("error %v does not wrap ErrBadToken", err)
			}
			return
		}
		back, err := ParseToken(tok.String())
		if err != nil || back != tok {
			t.Fatalf("%q -> %v -> %q -> %v, %v", s, uint64(tok), tok.String(), uint64(back), err)
		}
	})
}
