package incusfake

import (
	"fmt"
	"regexp"
	"strings"
)

// listFilter is the subset of Incus's list filter language the fake knows:
// clauses `[not] FIELD eq|ne VALUE` joined by `and`/`or`, evaluated left to
// right without precedence, as Incus's internal/filter does. A value is a
// case-insensitive regular expression, anchored at both ends unless it
// holds ^ or $; it may be quoted with ' or ". FIELD is a top-level field
// (name, status, type, project, location, description) or
// config.KEY / expanded_config.KEY; an unknown field matches nothing.
type listFilter []clause

type clause struct {
	join  string // "and" or "or"; "" for the first
	not   bool
	field string
	ne    bool
	value string
	re    *regexp.Regexp
	badOp bool // an operator other than eq/ne
}

func tokenize(s string) ([]string, error) {
	var toks []string
	for {
		s = strings.TrimLeft(s, " ")
		if s == "" {
			return toks, nil
		}
		if q := s[0]; q == '\'' || q == '"' {
			end := strings.IndexByte(s[1:], q)
			if end < 0 {
				return nil, refuse("Unterminated quote in filter")
			}
			toks = append(toks, s[1:1+end])
			s = s[2+end:]
			continue
		}
		end := strings.IndexByte(s, ' ')
		if end < 0 {
			end = len(s)
		}
		toks = append(toks, s[:end])
		s = s[end:]
	}
}

func parseFilter(s string) (listFilter, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	toks, err := tokenize(s)
	if err != nil {
		return nil, err
	}
	var f listFilter
	for len(toks) > 0 {
		var c clause
		if len(f) > 0 {
			switch strings.ToLower(toks[0]) {
			case "and", "or":
				c.join = strings.ToLower(toks[0])
				toks = toks[1:]
			default:
				return nil, refuse("Invalid filter: invalid clause composition")
			}
		}
		if len(toks) > 0 && strings.ToLower(toks[0]) == "not" {
			c.not = true
			toks = toks[1:]
		}
		if len(toks) < 3 {
			return nil, refuse("Invalid filter: clause has no value")
		}
		c.field = toks[0]
		switch strings.ToLower(toks[1]) {
		case "eq":
		case "ne":
			c.ne = true
		default:
			c.badOp = true // LXD: an unknown operator matches nothing
		}
		c.value = toks[2]
		toks = toks[3:]
		expr := c.value
		if !strings.ContainsAny(expr, "^$") {
			expr = "^" + expr + "$"
		}
		if re, err := regexp.Compile("(?i)" + expr); err == nil {
			c.re = re
		}
		f = append(f, c)
	}
	return f, nil
}

// field returns an object's field value as a string, false when unknown.
func field(obj map[string]any, name string) (string, bool) {
	if m, key, ok := strings.Cut(name, "."); ok {
		switch m {
		case "config", "expanded_config":
			cfg, _ := obj[m].(map[string]string)
			return cfg[key], true
		}
		return "", false
	}
	switch v := obj[name].(type) {
	case string:
		return v, true
	case bool:
		return fmt.Sprint(v), true
	}
	return "", false
}

func (c clause) eval(obj map[string]any) bool {
	v, known := field(obj, c.field)
	if !known || c.badOp {
		return false
	}
	var m bool
	if c.re != nil {
		m = c.re.MatchString(v)
	} else {
		m = strings.EqualFold(v, c.value)
	}
	if c.ne {
		m = !m
	}
	if c.not {
		m = !m
	}
	return m
}

func (f listFilter) match(obj map[string]any) bool {
	if len(f) == 0 {
		return true
	}
	res := f[0].eval(obj)
	for _, c := range f[1:] {
		if c.join == "and" {
			res = res && c.eval(obj)
		} else {
			res = res || c.eval(obj)
		}
	}
	return res
}
