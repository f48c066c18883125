package config

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// pathsByLine maps each line that holds a mapping key or a list item to
// the dotted path of that key or item.
func pathsByLine(n *yaml.Node, prefix string, out map[int]string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			p := joinPath(prefix, k.Value)
			if _, seen := out[k.Line]; !seen {
				out[k.Line] = p
			}
			pathsByLine(val, p, out)
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			p := joinPath(prefix, strconv.Itoa(i))
			if _, seen := out[item.Line]; !seen {
				out[item.Line] = p
			}
			pathsByLine(item, p, out)
		}
	}
}

func joinPath(prefix, part string) string {
	if prefix == "" {
		return part
	}
	return prefix + "." + part
}

var (
	reUnknown   = regexp.MustCompile("^line (\\d+): field (\\S+) not found in type")
	reUnmarshal = regexp.MustCompile("^line (\\d+): cannot unmarshal !!(\\w+) `(.*)` into (\\S+)$")
	reNoValue   = regexp.MustCompile("^line (\\d+): cannot unmarshal !!(\\w+) into (\\S+)$")
	reLine      = regexp.MustCompile("^line (\\d+): (.*)$")
)

// typeErrors rewrites the decoder's type errors so that each names the
// field and says what was wanted in words, not Go types.
func (v *validator) typeErrors(te *yaml.TypeError) error {
	paths := map[int]string{}
	pathsByLine(v.root, "", paths)
	var errs []error
	for _, msg := range te.Errors {
		if m := reUnknown.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			errs = append(errs, &Error{Line: line, Field: orField(paths[line], m[2]), Msg: fmt.Sprintf("unknown field %q", m[2])})
			continue
		}
		if m := reUnmarshal.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			errs = append(errs, &Error{Line: line, Field: orField(paths[line], "?"), Msg: fmt.Sprintf("want %s, got %s %q", wanted(m[4]), yamlKind(m[2]), m[3])})
			continue
		}
		if m := reNoValue.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			errs = append(errs, &Error{Line: line, Field: orField(paths[line], "?"), Msg: fmt.Sprintf("want %s, got %s", wanted(m[3]), yamlKind(m[2]))})
			continue
		}
		if m := reLine.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			// Messages from our own UnmarshalYAML already say what is wrong.
			inner := strings.TrimPrefix(m[2], "line "+m[1]+": ")
			errs = append(errs, &Error{Line: line, Field: orField(paths[line], "?"), Msg: inner})
			continue
		}
		errs = append(errs, errors.New(msg))
	}
	return errors.Join(errs...)
}

func orField(p, fallback string) string {
	if p == "" {
		return fallback
	}
	return p
}

func wanted(goType string) string {
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map["), strings.HasPrefix(goType, "config."), strings.HasPrefix(goType, "struct"):
		return "a mapping (key: value lines)"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "a whole number"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "bool":
		return "true or false"
	case goType == "string":
		return "a string"
	}
	return goType
}

func yamlKind(tag string) string {
	switch tag {
	case "str":
		return "the text"
	case "int":
		return "the number"
	case "float":
		return "the number"
	case "bool":
		return "the boolean"
	case "seq":
		return "a list"
	case "map":
		return "a mapping"
	}
	return tag
}

// checkNodes catches values the decoder accepts silently but the user
// surely did not mean: a fractional number where a whole one is wanted
// (yaml would truncate it) and an explicit weight of 0.
func (v *validator) checkNodes(n *yaml.Node, prefix string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			p := joinPath(prefix, k.Value)
			if val.Kind == yaml.ScalarNode && wholeNumberKeys[k.Value] {
				if val.Tag == "!!float" {
					v.errs = append(v.errs, &Error{Line: k.Line, Field: p, Msg: fmt.Sprintf("want a whole number, got %s", val.Value)})
				}
				if k.Value == "weight" && val.Tag == "!!int" && val.Value == "0" {
					v.errs = append(v.errs, &Error{Line: k.Line, Field: p, Msg: "0 is out of range 1..1000 (leave it out for the default 1)"})
				}
			}
			v.checkNodes(val, p)
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			v.checkNodes(item, joinPath(prefix, strconv.Itoa(i)))
		}
	}
}

// wholeNumberKeys are the integer fields of the schema.
var wholeNumberKeys = map[string]bool{
	"weight": true, "unhealthy_after": true, "healthy_after": true, "failures": true,
	"max_ejected_percent": true, "max": true, "min": true, "budget_percent": true,
	"max_conns_per_backend": true, "percent": true, "instances": true,
	"history_size": true, "send_queue": true,
}
