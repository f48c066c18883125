package replica

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
)

// IsReadOnly reports whether sql may run on a hot-standby replica. It is the
// rule Query and QueryRow route by; everything it does not accept goes to
// the primary. The rule is deliberately conservative: a false "no" costs a
// primary round trip, a false "yes" would fail on the replica or read a
// stale row that a lock was meant to protect.
//
// sql is read as PostgreSQL's lexer reads it, skipping string literals
// ('…', E'…' with backslash escapes, U&'…'), quoted identifiers ("…"),
// dollar-quoted strings ($$…$$, $tag$…$tag$), -- and nested /* */
// comments, and $n parameters. Every statement (sql may hold several,
// separated by ';') must pass all of these:
//
//   - its first word is SELECT, WITH, VALUES, TABLE or SHOW, or it starts
//     with a parenthesis ("(SELECT …) UNION …"); or it is EXPLAIN,
//     whose options (ANALYZE, VERBOSE, a parenthesised list) are skipped and
//     whose inner statement is then judged by this same rule;
//   - no word INSERT, UPDATE, DELETE, MERGE or INTO appears outside literals
//     (so data-modifying CTEs and SELECT … INTO go to the primary);
//   - no locking clause: SHARE after FOR or KEY (FOR SHARE, FOR KEY SHARE;
//     FOR UPDATE and FOR NO KEY UPDATE contain UPDATE);
//   - no call to a function that writes, takes a lock, or fails on a
//     standby: nextval, setval, currval, lastval, txid_current,
//     pg_current_xact_id, pg_notify, pg_switch_wal, pg_advisory_*,
//     pg_try_advisory_*, pg_current_wal_*, pg_create_*, pg_drop_*,
//     pg_logical_emit_message, lo_* (large objects), dblink_exec;
//   - no call to an administration function that acts on the server it
//     runs on, which must then be a known one (the primary), not whichever
//     replica the rotation picks: pg_terminate_backend, pg_cancel_backend,
//     pg_reload_conf, pg_rotate_logfile, pg_promote, set_config,
//     pg_log_backend_memory_contexts, pg_stat_reset*, pg_wal_replay_*. To
//     act on one replica (pg_wal_replay_pause, say), connect to it directly.
//
// An unterminated literal, identifier or comment, or text with no statement
// at all, is not read-only. The rule cannot see inside user-defined
// functions: a SELECT calling a function that writes (or a view or rule
// that does) is accepted and sent to a replica, where it fails with "cannot
// execute … in a read-only transaction"; send it with a context from
// Primary. It assumes standard_conforming_strings=on, the default since
// PostgreSQL 9.1.
func IsReadOnly(sql string) bool {
	lx := lexer{s: sql}
	const (
		stStart   = iota // expecting a statement's first word
		stExplain        // inside EXPLAIN's options
		stBody           // inside an accepted statement
	)
	state := stStart
	statements := 0
	var prev token
	parenDepth := 0 // of EXPLAIN's option list
	for {
		tk, ok := lx.next()
		if !ok {
			return false // unterminated literal or comment
		}
		if tk.kind == tkEOF {
			return statements > 0 && state != stExplain
		}
		switch state {
		case stStart:
			switch tk.kind {
			case tkSemicolon:
				prev = tk
				continue
			case tkWord:
				switch {
				case tk.is("select"), tk.is("with"), tk.is("values"), tk.is("table"), tk.is("show"):
					state = stBody
					statements++
				case tk.is("explain"):
					state = stExplain
					statements++
				default:
					return false
				}
			case tkOpen: // (SELECT …) UNION (SELECT …)
				state = stBody
				statements++
			default:
				return false
			}
		case stExplain:
			switch {
			case parenDepth > 0:
				switch tk.kind {
				case tkOpen:
					parenDepth++
				case tkClose:
					parenDepth--
				}
			case tk.kind == tkOpen:
				parenDepth = 1
			case tk.kind == tkWord && (tk.is("analyze") || tk.is("analyse") || tk.is("verbose")):
			case tk.kind == tkWord && (tk.is("select") || tk.is("with") || tk.is("values") || tk.is("table")):
				state = stBody
			default:
				return false
			}
		case stBody:
			switch tk.kind {
			case tkSemicolon:
				state = stStart
			case tkWord:
				switch len(tk.text) { // most words fail on length alone
				case 4:
					if tk.is("into") {
						return false
					}
				case 5:
					if tk.is("merge") || tk.is("share") && prev.kind == tkWord && (prev.is("for") || prev.is("key")) {
						return false
					}
				case 6:
					if tk.is("insert") || tk.is("update") || tk.is("delete") {
						return false
					}
				}
			case tkOpen:
				if (prev.kind == tkWord || prev.kind == tkQuotedIdent) && writesFunction(prev) {
					return false
				}
			}
		}
		prev = tk
	}
}

// writesFunction reports whether a function named by tk writes, locks or
// cannot run on a standby.
func writesFunction(tk token) bool {
	for _, name := range [...]string{"nextval", "setval", "currval", "lastval", "txid_current",
		"pg_current_xact_id", "pg_notify", "pg_switch_wal", "pg_logical_emit_message", "dblink_exec",
		// Administration of one server: it must be a known one, not
		// whichever replica the read rotation picks.
		"pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
		"pg_promote", "set_config", "pg_log_backend_memory_contexts"} {
		if tk.is(name) {
			return true
		}
	}
	for _, prefix := range [...]string{"pg_advisory_", "pg_try_advisory_", "pg_current_wal_", "pg_create_",
		"pg_drop_", "lo_", "pg_stat_reset", "pg_wal_replay_"} {
		if tk.hasPrefix(prefix) {
			return true
		}
	}
	return false
}

type tokenKind uint8

const (
	tkEOF tokenKind = iota
	tkWord
	tkQuotedIdent
	tkLiteral
	tkParam
	tkOpen
	tkClose
	tkSemicolon
	tkOther
)

// token is one lexical token; text is a word's or quoted identifier's name.
type token struct {
	kind tokenKind
	text string
}

// is reports whether tk names lit (lower case ASCII): case-insensitively
// for a word, exactly for a quoted identifier.
func (tk token) is(lit string) bool {
	if tk.kind == tkQuotedIdent {
		return tk.text == lit
	}
	if len(tk.text) != len(lit) {
		return false
	}
	return tk.hasPrefix(lit)
}

func (tk token) hasPrefix(lit string) bool {
	if len(tk.text) < len(lit) {
		return false
	}
	if tk.kind == tkQuotedIdent {
		return tk.text[:len(lit)] == lit
	}
	for i := 0; i < len(lit); i++ {
		c := tk.text[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lit[i] {
			return false
		}
	}
	return true
}

// lexer splits SQL into tokens the way PostgreSQL's scanner does, as far as
// IsReadOnly needs: it never allocates.
type lexer struct {
	s   string
	pos int
}

func isIdentStart(c byte) bool {
	return c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c >= 0x80
}

// isPlain reports whether c may continue a run of bytes that start no
// token the rule looks at: digits, spaces and operator characters other
// than '-' and '/' (which may open a comment).
func isPlain(c byte) bool {
	switch {
	case c < 64:
		return plainLo>>c&1 != 0
	case c < 128:
		return plainHi>>(c-64)&1 != 0
	}
	return false
}

// plainLo and plainHi are the bytes isPlain accepts, as bit sets of
// 0-63 and 64-127: the spaces, digits and ,.+*=<>!:[]%^|&~#@?
const (
	plainLo uint64 = 0xf7ff5c6b00003e00
	plainHi uint64 = 0x5000000068000001
)

func isIdentCont(c byte) bool {
	return isIdentStart(c) || '0' <= c && c <= '9' || c == '$'
}

// next returns the next token; ok is false on an unterminated literal,
// quoted identifier or comment.
func (lx *lexer) next() (tk token, ok bool) {
	s := lx.s
	for lx.pos < len(s) {
		c := s[lx.pos]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			lx.pos++
		case c == '-' && lx.pos+1 < len(s) && s[lx.pos+1] == '-':
			if i := strings.IndexAny(s[lx.pos:], "\n\r"); i >= 0 {
				lx.pos += i
			} else {
				lx.pos = len(s)
			}
		case c == '/' && lx.pos+1 < len(s) && s[lx.pos+1] == '*':
			depth := 0
			for {
				if lx.pos+1 >= len(s) {
					return token{}, false
				}
				switch {
				case s[lx.pos] == '/' && s[lx.pos+1] == '*':
					depth++
					lx.pos += 2
				case s[lx.pos] == '*' && s[lx.pos+1] == '/':
					depth--
					lx.pos += 2
				default:
					lx.pos++
					continue
				}
				if depth == 0 {
					break
				}
			}
		case c == '\'':
			lx.pos++
			return token{kind: tkLiteral}, lx.skipString(false)
		case (c == 'e' || c == 'E') && lx.pos+1 < len(s) && s[lx.pos+1] == '\'':
			lx.pos += 2
			return token{kind: tkLiteral}, lx.skipString(true)
		case c == '"':
			start := lx.pos + 1
			for i := start; i < len(s); i++ {
				if s[i] != '"' {
					continue
				}
				if i+1 < len(s) && s[i+1] == '"' {
					i++
					continue
				}
				lx.pos = i + 1
				return token{kind: tkQuotedIdent, text: s[start:i]}, true
			}
			return token{}, false
		case c == '$':
			return lx.dollar()
		case isIdentStart(c):
			start := lx.pos
			for lx.pos < len(s) && isIdentCont(s[lx.pos]) {
				lx.pos++
			}
			return token{kind: tkWord, text: s[start:lx.pos]}, true
		case c == '(':
			lx.pos++
			return token{kind: tkOpen}, true
		case c == ')':
			lx.pos++
			return token{kind: tkClose}, true
		case c == ';':
			lx.pos++
			return token{kind: tkSemicolon}, true
		default:
			// Numbers, operators, punctuation: the rule needs none of
			// them, so a run of them (and the spaces between) is one
			// token, which keeps long IN lists and VALUES cheap.
			lx.pos++
			for lx.pos < len(s) && isPlain(s[lx.pos]) {
				lx.pos++
			}
			return token{kind: tkOther}, true
		}
	}
	return token{kind: tkEOF}, true
}

// skipString moves past a single-quoted literal whose opening quote has
// been consumed; backslash escapes apply in E'…' strings.
func (lx *lexer) skipString(backslash bool) bool {
	s := lx.s
	if !backslash {
		for {
			i := strings.IndexByte(s[lx.pos:], '\'')
			if i < 0 {
				lx.pos = len(s)
				return false
			}
			lx.pos += i + 1
			if lx.pos < len(s) && s[lx.pos] == '\'' {
				lx.pos++ // '' is a quote inside the literal
				continue
			}
			return true
		}
	}
	for lx.pos < len(s) {
		c := s[lx.pos]
		switch {
		case backslash && c == '\\':
			lx.pos += 2
		case c == '\'':
			if lx.pos+1 < len(s) && s[lx.pos+1] == '\'' {
				lx.pos += 2
				continue
			}
			lx.pos++
			return true
		default:
			lx.pos++
		}
	}
	return false
}

// dollar lexes what starts with '$': a parameter ($1), or a dollar-quoted
// string ($$…$$, $tag$…$tag$).
func (lx *lexer) dollar() (token, bool) {
	s := lx.s
	start := lx.pos
	i := start + 1
	if i < len(s) && '0' <= s[i] && s[i] <= '9' {
		for i < len(s) && '0' <= s[i] && s[i] <= '9' {
			i++
		}
		lx.pos = i
		return token{kind: tkParam}, true
	}
	if i < len(s) && s[i] != '$' && isIdentStart(s[i]) {
		for i < len(s) && isIdentCont(s[i]) && s[i] != '$' {
			i++
		}
	}
	if i >= len(s) || s[i] != '$' {
		lx.pos = start + 1
		return token{kind: tkOther}, true
	}
	tag := s[start : i+1]
	body := i + 1
	for j := body; j+len(tag) <= len(s); j++ {
		if s[j] == '$' && s[j:j+len(tag)] == tag {
			lx.pos = j + len(tag)
			return token{kind: tkLiteral}, true
		}
	}
	return token{}, false
}

// Limits of a Cluster's statement cache.
const (
	// stmtCacheEntries bounds the statements remembered; when it is
	// reached the cache is emptied and refills with the statements in use.
	stmtCacheEntries = 4096
	// stmtCacheKeyLen is the longest statement kept as its own key; longer
	// ones are keyed by a 128-bit hash of their text and their length, so
	// the cache holds at most stmtCacheEntries × stmtCacheKeyLen bytes of
	// statement text whatever the statements' size.
	stmtCacheKeyLen = 1024
)

// stmtKey is the cache key of a statement longer than stmtCacheKeyLen: two
// independently seeded 64-bit hashes of its text, and its length. Two
// different statements collide with probability about 2^-128.
type stmtKey struct {
	h1, h2 uint64
	n      int
}

// stmtCache remembers IsReadOnly's answer for the statements an app runs
// (parameterised statements repeat, and so do long generated ones such as
// IN lists), bounded in entries and in memory. Its zero value is ready.
type stmtCache struct {
	m     sync.Map // statements up to stmtCacheKeyLen: string -> bool
	n     atomic.Int32
	once  sync.Once
	seeds [2]maphash.Seed

	mu   sync.RWMutex
	long map[stmtKey]bool // longer statements; guarded by mu
}

func (sc *stmtCache) readOnly(sql string) bool {
	if len(sql) > stmtCacheKeyLen {
		return sc.readOnlyLong(sql)
	}
	if v, ok := sc.m.Load(sql); ok {
		return v.(bool)
	}
	ro := IsReadOnly(sql)
	if _, loaded := sc.m.LoadOrStore(sql, ro); !loaded {
		sc.added()
	}
	return ro
}

func (sc *stmtCache) readOnlyLong(sql string) bool {
	sc.once.Do(func() { sc.seeds = [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()} })
	k := stmtKey{maphash.String(sc.seeds[0], sql), maphash.String(sc.seeds[1], sql), len(sql)}
	sc.mu.RLock()
	ro, ok := sc.long[k]
	sc.mu.RUnlock()
	if ok {
		return ro
	}
	ro = IsReadOnly(sql)
	sc.mu.Lock()
	if sc.long == nil {
		sc.long = make(map[stmtKey]bool)
	}
	_, ok = sc.long[k]
	sc.long[k] = ro
	sc.mu.Unlock()
	if !ok {
		sc.added()
	}
	return ro
}

// added counts a new entry and, past stmtCacheEntries, empties the cache
// so that it refills with the statements in use now. Entries stored
// concurrently with the reset may go uncounted: the bound may be passed
// by the number of concurrent callers, no more.
func (sc *stmtCache) added() {
	if sc.n.Add(1) <= stmtCacheEntries {
		return
	}
	sc.m.Clear()
	sc.mu.Lock()
	clear(sc.long)
	sc.mu.Unlock()
	sc.n.Store(0)
}
