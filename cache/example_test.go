package cache_test

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/scaleout/scaleout/cache"
)

func Example() {
	ctx := context.Background()
	rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", ReadTimeout: 250 * time.Millisecond, MaxRetries: -1})
	defer rc.Close()
	c, err := cache.New(ctx, cache.Config{Redis: rc, Prefix: "example:"})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	_ = c.Delete(ctx, "user:1")
	defer c.InvalidateTags(ctx, "users")

	type user struct{ Name string }
	loadUser := func(ctx context.Context) (user, error) {
		return user{Name: "ada"}, nil // from the database
	}
	// Memory, then Redis, then loadUser; concurrent callers share one load.
	u, err := cache.GetOrFetchValue(ctx, c, "user:1", time.Minute, loadUser, "users")
	fmt.Println(u.Name, err)

	// Write-through: persist first, then cache and invalidate other nodes.
	err = c.SetAndPersist(ctx, "user:1", cache.Item{Value: []byte(`{"Name":"grace"}`), Tags: []string{"users"}},
		func(ctx context.Context) error { return nil /* UPDATE users … */ })
	u, _, _ = cache.GetValue[user](ctx, c, "user:1")
	fmt.Println(u.Name, err)
	// Output:
	// ada <nil>
	// grace <nil>
}
