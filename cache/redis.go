package cache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisLayer is the shared layer. Keys under its prefix:
//
//	<prefix>v:<key>  the record (encodeRecord) with a PX expiry
//	<prefix>t:<tag>  a set of the keys carrying the tag, expiring with its
//	                 longest-lived member
//	<prefix>l:<key>  GetOrFetch's fetch lock (SET NX PX)
//	<prefix>inval    the pub/sub channel of invalidation messages
type redisLayer struct {
	client  redis.UniversalClient
	prefix  string
	channel string

	hits, misses, errors atomic.Uint64

	// Server-wide figures, refreshed every Config.StatsInterval.
	keys, usedBytes, evictedKeys atomic.Int64
}

func newRedisLayer(client redis.UniversalClient, prefix string) *redisLayer {
	return &redisLayer{client: client, prefix: prefix, channel: prefix + "inval"}
}

func (r *redisLayer) valueKey(key string) string { return r.prefix + "v:" + key }
func (r *redisLayer) tagKey(tag string) string   { return r.prefix + "t:" + tag }
func (r *redisLayer) lockKey(key string) string  { return r.prefix + "l:" + key }

// get reads a record and its remaining TTL in one round trip. A key without
// an expiry (written by someone else) gets noExpiryTTL.
func (r *redisLayer) get(ctx context.Context, key string, noExpiryTTL time.Duration) (value []byte, tags []string, ttl time.Duration, ok bool, err error) {
	vk := r.valueKey(key)
	pipe := r.client.Pipeline()
	getCmd := pipe.Get(ctx, vk)
	ttlCmd := pipe.PTTL(ctx, vk)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		r.errors.Add(1)
		return nil, nil, 0, false, fmt.Errorf("cache: redis get %q: %w", key, err)
	}
	b, err := getCmd.Bytes()
	if errors.Is(err, redis.Nil) {
		r.misses.Add(1)
		return nil, nil, 0, false, nil
	}
	if err != nil {
		r.errors.Add(1)
		return nil, nil, 0, false, fmt.Errorf("cache: redis get %q: %w", key, err)
	}
	ttl = ttlCmd.Val()
	switch {
	case ttl == -1: // no expiry
		ttl = noExpiryTTL
	case ttl <= 0: // expired between GET and PTTL
		r.misses.Add(1)
		return nil, nil, 0, false, nil
	}
	value, tags, err = decodeRecord(b)
	if err != nil {
		// Not ours (or from an incompatible version): drop it, so that a
		// fill (SET NX) can replace it.
		r.errors.Add(1)
		_ = r.client.Unlink(ctx, vk).Err()
		return nil, nil, 0, false, fmt.Errorf("cache: redis get %q: %w", key, err)
	}
	r.hits.Add(1)
	return value, tags, ttl, true, nil
}

// set writes a record, adds key to its tag sets, and publishes msg (if not
// nil), in one round trip. With onlyIfAbsent the record is written only if
// the key has no value (SET NX); stored reports whether it was written.
func (r *redisLayer) set(ctx context.Context, key string, record []byte, ttl time.Duration, tags []string, msg []byte, onlyIfAbsent bool) (stored bool, err error) {
	pipe := r.client.Pipeline()
	var setCmd *redis.BoolCmd
	var plainSet *redis.StatusCmd
	if onlyIfAbsent {
		setCmd = pipe.SetNX(ctx, r.valueKey(key), record, ttl)
	} else {
		plainSet = pipe.Set(ctx, r.valueKey(key), record, ttl)
	}
	// A tag set lives as long as its longest-lived member: NX sets the
	// expiry of a new set, GT extends an existing one.
	tagTTL := ttl.Round(time.Second) + time.Second
	for _, t := range tags {
		tk := r.tagKey(t)
		pipe.SAdd(ctx, tk, key)
		pipe.ExpireNX(ctx, tk, tagTTL)
		pipe.ExpireGT(ctx, tk, tagTTL)
	}
	if msg != nil {
		pipe.Publish(ctx, r.channel, msg)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		r.errors.Add(1)
		return false, fmt.Errorf("cache: redis set %q: %w", key, err)
	}
	if onlyIfAbsent {
		return setCmd.Val(), nil
	}
	return plainSet.Err() == nil, nil
}

// del deletes keys and publishes msg, in one round trip.
func (r *redisLayer) del(ctx context.Context, keys []string, msg []byte) error {
	pipe := r.client.Pipeline()
	vks := make([]string, len(keys))
	for i, k := range keys {
		vks[i] = r.valueKey(k)
	}
	pipe.Unlink(ctx, vks...)
	if msg != nil {
		pipe.Publish(ctx, r.channel, msg)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		r.errors.Add(1)
		return fmt.Errorf("cache: redis delete %d keys: %w", len(keys), err)
	}
	return nil
}

// invalidateTagsScript deletes, atomically, every value whose key is in one
// of the tag sets KEYS, and the sets. ARGV[1] is the value key prefix.
// (It touches keys not named in KEYS, so it needs a non-cluster Redis.)
const invalidateTagsScript = `
local n = 0
for _, t in ipairs(KEYS) do
  local members = redis.call('SMEMBERS', t)
  for _, m in ipairs(members) do
    n = n + redis.call('UNLINK', ARGV[1] .. m)
  end
  redis.call('UNLINK', t)
end
return n`

// invalidateTags deletes every value carrying one of tags and publishes
// msg, in one round trip.
func (r *redisLayer) invalidateTags(ctx context.Context, tags []string, msg []byte) error {
	tks := make([]string, len(tags))
	for i, t := range tags {
		tks[i] = r.tagKey(t)
	}
	pipe := r.client.Pipeline()
	pipe.Eval(ctx, invalidateTagsScript, tks, r.prefix+"v:")
	if msg != nil {
		pipe.Publish(ctx, r.channel, msg)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		r.errors.Add(1)
		return fmt.Errorf("cache: redis invalidate tags %q: %w", tags, err)
	}
	return nil
}

// flushAll deletes every key under the prefix and publishes msg.
func (r *redisLayer) flushAll(ctx context.Context, msg []byte) error {
	iter := r.client.Scan(ctx, 0, escapeGlob(r.prefix)+"*", 1000).Iterator()
	batch := make([]string, 0, 1000)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := r.client.Unlink(ctx, batch...).Err()
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == cap(batch) {
			if err := flush(); err != nil {
				r.errors.Add(1)
				return fmt.Errorf("cache: redis flush: %w", err)
			}
		}
	}
	err := iter.Err()
	if err == nil {
		err = flush()
	}
	if err == nil && msg != nil {
		err = r.client.Publish(ctx, r.channel, msg).Err()
	}
	if err != nil {
		r.errors.Add(1)
		return fmt.Errorf("cache: redis flush: %w", err)
	}
	return nil
}

func escapeGlob(s string) string {
	var b strings.Builder
	for _, c := range s {
		switch c {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// lock takes GetOrFetch's fetch lock for key.
func (r *redisLayer) lock(ctx context.Context, key, token string, ttl time.Duration) (bool, error) {
	ok, err := r.client.SetNX(ctx, r.lockKey(key), token, ttl).Result()
	if err != nil {
		r.errors.Add(1)
		return false, fmt.Errorf("cache: redis lock %q: %w", key, err)
	}
	return ok, nil
}

// locked reports whether key's fetch lock is held.
func (r *redisLayer) locked(ctx context.Context, key string) (bool, error) {
	n, err := r.client.Exists(ctx, r.lockKey(key)).Result()
	if err != nil {
		r.errors.Add(1)
		return false, fmt.Errorf("cache: redis lock check %q: %w", key, err)
	}
	return n == 1, nil
}

const unlockScript = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`

// unlock releases the fetch lock if token still holds it.
func (r *redisLayer) unlock(ctx context.Context, key, token string) error {
	if err := r.client.Eval(ctx, unlockScript, []string{r.lockKey(key)}, token).Err(); err != nil {
		r.errors.Add(1)
		return fmt.Errorf("cache: redis unlock %q: %w", key, err)
	}
	return nil
}

func (r *redisLayer) publish(ctx context.Context, msg []byte) error {
	if err := r.client.Publish(ctx, r.channel, msg).Err(); err != nil {
		r.errors.Add(1)
		return fmt.Errorf("cache: redis publish: %w", err)
	}
	return nil
}

func (r *redisLayer) stats() LayerStats {
	return LayerStats{
		Hits:      r.hits.Load(),
		Misses:    r.misses.Load(),
		Errors:    r.errors.Load(),
		Evictions: uint64(r.evictedKeys.Load()),
		Entries:   r.keys.Load(),
		Bytes:     r.usedBytes.Load(),
	}
}

// readServerStats reads the key count of the database and the memory and
// evictions of the server.
func (r *redisLayer) readServerStats(ctx context.Context) error {
	pipe := r.client.Pipeline()
	size := pipe.DBSize(ctx)
	info := pipe.Info(ctx, "memory", "stats")
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("cache: reading redis stats: %w", err)
	}
	r.keys.Store(size.Val())
	for line := range strings.Lines(info.Val()) {
		name, value, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "used_memory":
			r.usedBytes.Store(n)
		case "evicted_keys":
			r.evictedKeys.Store(n)
		}
	}
	return nil
}
