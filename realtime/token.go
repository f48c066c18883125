package realtime

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Claims is what a connection token asserts about its bearer.
type Claims struct {
	// User is the user id. Messages published to this user reach every
	// connection that presented a token for it. Required.
	User string `json:"user"`
	// Channels lists the channels the bearer may subscribe to. An entry
	// ending in "*" allows every channel with that prefix ("chat:*"); "*"
	// alone allows every channel. Empty means none.
	Channels []string `json:"channels,omitempty"`
	// Publish allows the bearer to publish from the WebSocket to the
	// channels it may subscribe to. By default clients only receive.
	Publish bool `json:"publish,omitempty"`
	// Expires is when the token stops being accepted. Required: a token
	// without an expiry is refused.
	Expires time.Time `json:"-"`
}

// tokenBody is the JSON form of Claims inside a token.
type tokenBody struct {
	User     string   `json:"u"`
	Channels []string `json:"c,omitempty"`
	Publish  bool     `json:"p,omitempty"`
	Expires  int64    `json:"e"`
}

// Token errors, which Hub reports to clients as close codes.
var (
	// ErrTokenMalformed means the token is not of the form body.signature
	// with base64url parts and a JSON body.
	ErrTokenMalformed = errors.New("malformed token")
	// ErrTokenSignature means the signature does not match the body: the
	// token was forged, altered or signed with another secret.
	ErrTokenSignature = errors.New("invalid token signature")
	// ErrTokenExpired means the token's expiry has passed.
	ErrTokenExpired = errors.New("token expired")
)

var b64 = base64.RawURLEncoding

// SignToken returns a token asserting c, signed with HMAC-SHA256 under
// secret. The app signs tokens for its users with the secret shared with
// the gateway (Config.Secret) and hands them to its clients.
func SignToken(secret []byte, c Claims) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("signing token: empty secret")
	}
	if c.User == "" {
		return "", errors.New("signing token: empty user")
	}
	if c.Expires.IsZero() {
		return "", errors.New("signing token: no expiry")
	}
	body, err := json.Marshal(tokenBody{User: c.User, Channels: c.Channels, Publish: c.Publish, Expires: c.Expires.Unix()})
	if err != nil {
		return "", fmt.Errorf("signing token: %w", err)
	}
	enc := b64.EncodeToString(body)
	return enc + "." + b64.EncodeToString(sign(secret, enc)), nil
}

// ParseToken checks token's signature under secret and its expiry against
// now, and returns its claims. Errors wrap ErrTokenMalformed,
// ErrTokenSignature or ErrTokenExpired.
func ParseToken(secret []byte, token string, now time.Time) (Claims, error) {
	enc, sigEnc, ok := strings.Cut(token, ".")
	if !ok || enc == "" || sigEnc == "" || len(token) > 8192 {
		return Claims{}, fmt.Errorf("%w: want body.signature", ErrTokenMalformed)
	}
	sig, err := b64.DecodeString(sigEnc)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: signature: %v", ErrTokenMalformed, err)
	}
	if !hmac.Equal(sig, sign(secret, enc)) {
		return Claims{}, ErrTokenSignature
	}
	raw, err := b64.DecodeString(enc)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: body: %v", ErrTokenMalformed, err)
	}
	var tb tokenBody
	if err := json.Unmarshal(raw, &tb); err != nil {
		return Claims{}, fmt.Errorf("%w: body: %v", ErrTokenMalformed, err)
	}
	if tb.User == "" || tb.Expires == 0 {
		return Claims{}, fmt.Errorf("%w: missing user or expiry", ErrTokenMalformed)
	}
	exp := time.Unix(tb.Expires, 0)
	if !now.Before(exp) {
		return Claims{}, fmt.Errorf("%w at %s", ErrTokenExpired, exp.UTC().Format(time.RFC3339))
	}
	return Claims{User: tb.User, Channels: tb.Channels, Publish: tb.Publish, Expires: exp}, nil
}

func sign(secret []byte, body string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(body))
	return m.Sum(nil)
}

// allows reports whether the claims allow subscribing to channel.
func (c *Claims) allows(channel string) bool {
	for _, p := range c.Channels {
		if p == channel {
			return true
		}
		if strings.HasSuffix(p, "*") && strings.HasPrefix(channel, p[:len(p)-1]) {
			return true
		}
	}
	return false
}
