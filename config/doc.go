// Package config is the gateway's YAML schema: parsing, defaults and
// validation. Every error it returns names the offending field and the line
// of the file it is on, so that a bad file is rejected before any port is
// bound.
//
// A Config is a plain value; Load returns a new one each time and nothing in
// this package keeps state, so it is safe to use from any goroutine.
package config
