package cache

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Codec turns typed values into the bytes the cache stores, for the typed
// helpers GetValue, SetValue and GetOrFetchValue. It must be safe for
// concurrent use.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the default Codec: encoding/json.
type JSON struct{}

// Marshal encodes v as JSON.
func (JSON) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes JSON data into v.
func (JSON) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

var _ Codec = JSON{}

// GetValue reads key like Cache.Get and decodes it with the cache's Codec.
// ok is false on a miss; err is set only when the stored bytes do not
// decode (the entry is then left alone).
func GetValue[T any](ctx context.Context, c *Cache, key string) (v T, ok bool, err error) {
	it, ok := c.Get(ctx, key)
	if !ok {
		return v, false, nil
	}
	if err := c.cfg.Codec.Unmarshal(it.Value, &v); err != nil {
		return v, false, fmt.Errorf("cache: decoding %q: %w", key, err)
	}
	return v, true, nil
}

// SetValue encodes v with the cache's Codec and stores it like Cache.Set.
func SetValue[T any](ctx context.Context, c *Cache, key string, v T, ttl time.Duration, tags ...string) error {
	b, err := c.cfg.Codec.Marshal(v)
	if err != nil {
		return fmt.Errorf("cache: encoding %q: %w", key, err)
	}
	return c.Set(ctx, key, Item{Value: b, TTL: ttl, Tags: tags})
}

// GetOrFetchValue is Cache.GetOrFetch for typed values: on a miss fetch
// returns the value, which is encoded with the cache's Codec and stored for
// ttl (0 means Config.DefaultTTL) under the given tags.
func GetOrFetchValue[T any](ctx context.Context, c *Cache, key string, ttl time.Duration, fetch func(ctx context.Context) (T, error), tags ...string) (T, error) {
	var zero T
	it, err := c.GetOrFetch(ctx, key, FetcherFunc(func(ctx context.Context, key string) (Item, error) {
		v, err := fetch(ctx)
		if err != nil {
			return Item{}, err
		}
		b, err := c.cfg.Codec.Marshal(v)
		if err != nil {
			return Item{}, fmt.Errorf("encoding: %w", err)
		}
		return Item{Value: b, TTL: ttl, Tags: tags}, nil
	}))
	if err != nil {
		return zero, err
	}
	var v T
	if err := c.cfg.Codec.Unmarshal(it.Value, &v); err != nil {
		return zero, fmt.Errorf("cache: decoding %q: %w", key, err)
	}
	return v, nil
}
