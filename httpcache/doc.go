// Package httpcache is a shared HTTP cache (RFC 9111) for the gateway, kept
// in a cache.Cache: memory in front of Redis, so that every gateway node
// sharing Redis shares the stored responses and their purges.
//
// The package decides and stores; it does not speak HTTP itself. Policy
// functions (Storable, Lifetime, Entry.Age, Entry.Freshness, ...) work on
// plain header values, so that the gateway's fasthttp glue and any other
// HTTP stack can use them. What it implements:
//
//   - storing only what a shared cache may store: GET responses with a
//     cacheable status and explicit freshness (max-age, s-maxage, Expires),
//     or a configured default TTL; never no-store or private responses,
//     never a response carrying Set-Cookie unless allowed, never a response
//     to a request with Authorization unless the response says public,
//     s-maxage or must-revalidate, never an error status without explicit
//     freshness;
//   - Age from the upstream's Age and Date and the time spent here;
//   - Vary: entries are keyed by the request headers Vary names; Vary: *
//     is never stored;
//   - validators for revalidation (ETag, Last-Modified) and the windows of
//     stale-while-revalidate and stale-if-error;
//   - purge by URL (all variants) and by tag (Cache-Tag, Surrogate-Key).
//
// A Store is safe for concurrent use.
package httpcache
