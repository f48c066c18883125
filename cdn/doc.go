// Package cdn offloads static assets to a CDN without changing the app.
//
// A [Rewriter] is built from one route's [Config]. It rewrites the asset URLs
// in the HTML and CSS responses that the gateway proxies so that they point at
// the CDN host, it tells the gateway which requests are for offloadable assets
// and which cache and CORS headers to give them when the CDN pulls them from
// the gateway (the CDN's origin), and it counts what was offloaded.
//
// Everything here is plain functions over strings, headers and byte streams:
// nothing depends on the HTTP stack that carries the responses.
//
// # Rewriting
//
// HTML is rewritten as it streams through, token by token, with the tokenizer
// of golang.org/x/net/html. Every token's original bytes are copied unchanged;
// only the value of an attribute that holds an offloadable URL is patched in
// place, so attribute order, quoting, entities and whitespace survive. CSS
// (text/css bodies, <style> blocks and style attributes) is rewritten by a
// small streaming scanner that understands comments, strings, escapes, url()
// and @import. Memory per stream is bounded by [Config.MaxTokenSize].
//
// A reference is rewritten when it resolves (against the page URL and its
// <base href>) to the page's own origin or to one of [Config.Origins], and its
// path matches one of [Config.Patterns]. The rewritten URL is [Config.Host]
// followed by the resolved path and query (and fragment), plus an optional
// version parameter from a [Versioner].
//
// # Concurrency
//
// A Rewriter is immutable after [New] apart from its atomic counters: all of
// its methods are safe to call from many goroutines at once. A single
// [Writer] (one response body) must be used by one goroutine at a time. A
// [Collector] is safe for concurrent use.
package cdn
