package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
)

func newVersionCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print the version, commit, build date and Go version",
		Example: "  projectord version\n  projectord version --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := currentBuild()
			if asJSON {
				enc := json.NewEncoder(e.stdout)
				return enc.Encode(map[string]string{"version": b.Version, "commit": b.Commit, "date": b.Date, "go": b.GoVersion})
			}
			_, err := fmt.Fprintln(e.stdout, b.String())
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
