package main

import (
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReadmeDocumentsEveryCommandAndFlag holds README's "Use" table to the
// command tree: a command or flag added without its line fails here.
func TestReadmeDocumentsEveryCommandAndFlag(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	readme := string(data)
	lines := strings.Split(readme, "\n")
	start := slices.Index(lines, "## Use")
	require.GreaterOrEqual(t, start, 0, "README.md has no \"## Use\"")
	end := start + 1
	for end < len(lines) && !strings.HasPrefix(lines[end], "## ") {
		end++
	}
	use := strings.Join(lines[start:end], "\n")

	root := newRootCmd(&env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard})
	var commands int
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" || sub.Name() == "completion" {
				continue
			}
			commands++
			assert.True(t, strings.Contains(use, "`"+sub.CommandPath()), "README.md \"Use\" does not document %q", sub.CommandPath())
			sub.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
				if f.Hidden || f.Name == "help" {
					return
				}
				// A command's flags are in its own row, or (dev's many) in
				// the section that explains them.
				documented := strings.Contains(readme, "--"+f.Name) ||
					f.Shorthand != "" && strings.Contains(use, "-"+f.Shorthand+" ")
				assert.True(t, documented, "README.md does not document %s --%s", sub.CommandPath(), f.Name)
			})
			walk(sub)
		}
	}
	walk(root)
	require.Greater(t, commands, 10, "the walk found too few commands")
	root.PersistentFlags().VisitAll(func(f *pflag.Flag) {
		assert.True(t, strings.Contains(readme, "--"+f.Name), "README.md does not document the global flag --%s", f.Name)
	})
}
