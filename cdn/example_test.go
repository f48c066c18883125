package cdn_test

import (
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/scaleout/scaleout/cdn"
)

func ExampleRewriter_Rewrite() {
	r, err := cdn.New(cdn.Config{
		Host:    "https://cdn.example.com",
		Origins: []string{"https://www.example.com"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	page, _ := url.Parse("https://www.example.com/blog/post.html")
	body := `<img src="img/a.png" srcset="/b.png 1x, /b@2x.png 2x"><a href="/about">about</a>` + "\n"
	if _, err := r.Rewrite(os.Stdout, strings.NewReader(body), page, "text/html; charset=utf-8"); err != nil {
		fmt.Println(err)
	}
	// Output:
	// <img src="https://cdn.example.com/blog/img/a.png" srcset="https://cdn.example.com/b.png 1x, https://cdn.example.com/b@2x.png 2x"><a href="/about">about</a>
}

func ExampleRewriter_AssetHeaders() {
	r, _ := cdn.New(cdn.Config{Host: "https://cdn.example.com", Origins: []string{"https://www.example.com"}, Fingerprint: true})
	h, ok := r.AssetHeaders("/fonts/inter.woff2", "v=3f2a", "https://www.example.com")
	fmt.Println(ok, h.CacheControl, h.AccessControlAllowOrigin, h.Vary)
	// Output:
	// true public, max-age=31536000, immutable https://www.example.com Origin
}
