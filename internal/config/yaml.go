package config

import (
	"errors"
	"fmt"
	"reflect"

	"go.yaml.in/yaml/v3"
)

// Bounds on a config document. A config file is a few kilobytes; these
// leave ample room and keep every step of loading (parsing, merging,
// reporting) linear in the input, whatever the input.
const (
	// MaxConfigSize is the largest config file accepted, in bytes.
	MaxConfigSize = 1 << 20
	// MaxConfigDepth is the deepest nesting of mappings and lists accepted.
	// A real config nests six deep (projectors[i].sink.sql.handlers.T).
	MaxConfigDepth = 32
	// maxConfigNodes bounds the values a document expands to, counting
	// every use of a YAML alias anew ("billion laughs": a few lines of
	// nested aliases expand to 10^9 values). A real config has hundreds;
	// this many take well under a second to load.
	maxConfigNodes = 1 << 18
)

// errBounds marks a document refused for its size, depth or expansion,
// rather than for its syntax.
var errBounds = errors.New("the document exceeds the loader's bounds")

// parseYAML decodes a document into a generic map. An empty document is an
// empty map.
//
// It parses into yaml.Node and builds the maps itself instead of letting
// yaml.v3 decode into `any`: yaml.v3 checks a mapping for duplicate keys by
// comparing every pair (quadratic: 100,000 keys took minutes) and expands
// aliases without a depth or size bound. The result is what yaml.v3 would
// produce: map[string]any where every key is a string, map[any]any
// otherwise, scalars resolved by yaml.v3 itself, merge keys ("<<") applied.
func parseYAML(data []byte) (map[string]any, error) {
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("%w: it is %d bytes, more than %d (1 MiB)", errBounds, len(data), MaxConfigSize)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, err
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return map[string]any{}, nil
	}
	b := &yamlBuilder{active: map[*yaml.Node]bool{}}
	doc, err := b.value(root.Content[0], 1)
	if err != nil {
		return nil, err
	}
	switch d := doc.(type) {
	case nil:
		return map[string]any{}, nil
	case map[string]any:
		return d, nil
	case map[any]any:
		m := make(map[string]any, len(d))
		for k, v := range d {
			m[fmt.Sprint(k)] = v
		}
		return m, nil
	}
	return nil, errors.New("the top level must be a mapping of keys to values")
}

type yamlBuilder struct {
	nodes  int                 // values built so far, aliases counted at every use
	active map[*yaml.Node]bool // anchors being expanded, to refuse cycles
}

func (b *yamlBuilder) value(n *yaml.Node, depth int) (any, error) {
	b.nodes++
	if b.nodes > maxConfigNodes {
		return nil, fmt.Errorf("%w: line %d: it expands to more than %d values (aliases used too often?)", errBounds, n.Line, maxConfigNodes)
	}
	switch n.Kind {
	case yaml.AliasNode:
		if n.Alias == nil {
			return nil, fmt.Errorf("line %d: unknown anchor %q", n.Line, n.Value)
		}
		if b.active[n.Alias] {
			return nil, fmt.Errorf("line %d: anchor %q refers to itself", n.Line, n.Value)
		}
		b.active[n.Alias] = true
		defer delete(b.active, n.Alias)
		b.nodes-- // the alias itself is not a value; what it names is
		return b.value(n.Alias, depth)
	case yaml.ScalarNode:
		return scalar(n)
	case yaml.SequenceNode, yaml.MappingNode:
		if depth > MaxConfigDepth {
			return nil, fmt.Errorf("%w: line %d: nested more than %d levels deep", errBounds, n.Line, MaxConfigDepth)
		}
	default:
		return nil, fmt.Errorf("line %d: unexpected YAML node", n.Line)
	}
	if n.Kind == yaml.SequenceNode {
		s := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := b.value(c, depth+1)
			if err != nil {
				return nil, err
			}
			s = append(s, v)
		}
		return s, nil
	}
	return b.mapping(n, depth)
}

// scalar resolves a scalar as yaml.v3 does; plain strings, by far the
// most common, without the cost of a decoder.
func scalar(n *yaml.Node) (any, error) {
	switch n.ShortTag() {
	case "!!str":
		return n.Value, nil
	case "!!null":
		return nil, nil
	}
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// mapping builds a mapping, refusing a key written twice as yaml.v3 does,
// but with a map instead of comparing every pair of keys.
func (b *yamlBuilder) mapping(n *yaml.Node, depth int) (any, error) {
	type seenKey struct {
		kind  yaml.Kind
		value string
	}
	seen := make(map[seenKey]int, len(n.Content)/2)
	stringKeys := true
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		sk := seenKey{k.Kind, k.Value}
		if line, dup := seen[sk]; dup {
			return nil, fmt.Errorf("line %d: mapping key %q already defined at line %d", k.Line, k.Value, line)
		}
		seen[sk] = k.Line
		if t := resolveAlias(k).ShortTag(); t != "!!str" && t != "!!merge" {
			stringKeys = false
		}
	}
	var m map[any]any
	var sm map[string]any
	var out any
	if stringKeys {
		sm = make(map[string]any, len(n.Content)/2)
		out = sm
	} else {
		m = make(map[any]any, len(n.Content)/2)
		out = m
	}
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if isMergeKey(k) {
			merges = append(merges, n.Content[i+1])
			continue
		}
		k = resolveAlias(k)
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("line %d: a mapping key must be a single value, not a list or mapping", k.Line)
		}
		v, err := b.value(n.Content[i+1], depth+1)
		if err != nil {
			return nil, err
		}
		if sm != nil {
			sm[k.Value] = v
			continue
		}
		key, err := scalar(k)
		if err != nil {
			return nil, err
		}
		if key != nil && !reflect.TypeOf(key).Comparable() {
			return nil, fmt.Errorf("line %d: invalid mapping key", k.Line)
		}
		m[key] = v
	}
	// A merged mapping never overrides a key the mapping sets itself, and
	// an earlier one in a list wins over a later one (yaml.v3's semantics).
	for _, mv := range merges {
		sources := []*yaml.Node{mv}
		if mv.Kind == yaml.SequenceNode {
			sources = mv.Content
		}
		for _, src := range sources {
			if resolveAlias(src).Kind != yaml.MappingNode {
				return nil, fmt.Errorf("line %d: map merge requires a mapping or a list of mappings as its value", mv.Line)
			}
			v, err := b.value(src, depth)
			if err != nil {
				return nil, err
			}
			mergeBuilt(m, sm, v)
		}
	}
	return out, nil
}

// mergeBuilt adds the keys of a built mapping that dst lacks.
func mergeBuilt(m map[any]any, sm map[string]any, src any) {
	switch s := src.(type) {
	case map[string]any:
		for k, v := range s {
			if sm != nil {
				if _, ok := sm[k]; !ok {
					sm[k] = v
				}
			} else if _, ok := m[k]; !ok {
				m[k] = v
			}
		}
	case map[any]any:
		for k, v := range s {
			if sm != nil {
				if _, ok := sm[fmt.Sprint(k)]; !ok {
					sm[fmt.Sprint(k)] = v
				}
			} else if _, ok := m[k]; !ok {
				m[k] = v
			}
		}
	}
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isMergeKey(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Value == "<<" && (n.Tag == "" || n.Tag == "!" || n.ShortTag() == "!!merge")
}
