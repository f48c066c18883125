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
// What is rewritten in HTML: src (not of <iframe>/<frame>), srcset (every
// candidate, descriptors kept), data-src, data-srcset, poster, background,
// the href (and imagesrcset) of
// <link rel=stylesheet|preload|modulepreload|prefetch|icon|apple-touch-icon|
// mask-icon>, href and xlink:href of SVG <image> and <use>, the content of
// <meta property=og:image> (and twitter:image), style attributes, <style>
// blocks and <noscript> content. Nothing inside <script>, <textarea>,
// <title>, comments or <pre> is touched, nor <a href> links, nor a tag with
// an integrity attribute but no crossorigin attribute (subresource integrity
// fails on a cross-origin fetch without CORS). In CSS: url(),
// @import "..." / @import url(...), and the strings of image-set().
//
// # In a proxy
//
// For a response whose Content-Type is [Rewriter.Rewritable]: pick the output
// encoding with [Negotiate] (upstream Content-Encoding, client
// Accept-Encoding), stream the body through [Rewriter.RewriteEncoded] (or
// [Decode], [Rewriter.NewWriter] and [Encode] for push-style bodies), drop
// Content-Length (the length changes), set Content-Encoding to the chosen
// encoding, add "Vary: Accept-Encoding", and make a strong ETag weak.
//
// As the CDN's origin: for a request whose path is [Rewriter.IsAsset], set
// the headers [Rewriter.AssetHeaders] returns, and count the response with
// [Rewriter.RecordAsset], telling CDN pulls from direct requests with
// [Rewriter.FromCDN]. [Rewriter.Stats] and a [Collector] expose the counts.
//
// # Fingerprints
//
// With Config.Fingerprint and a [Versioner] (such as a [VersionMap] filled
// from the ETags of the assets the origin serves), rewritten URLs carry
// "?v=<version>", and [Rewriter.AssetHeaders] gives requests that carry a
// version an immutable one-year Cache-Control.
//
// # Concurrency
//
// A Rewriter is immutable after [New] apart from its atomic counters: all of
// its methods are safe to call from many goroutines at once. A single
// [Writer] (one response body) must be used by one goroutine at a time. A
// [Collector] is safe for concurrent use.
package cdn
