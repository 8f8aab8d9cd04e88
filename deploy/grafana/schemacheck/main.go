// schemacheck validates Grafana dashboard JSON files against Grafana's dashboard schema, as
// generated into the grafana-foundation-sdk Go module: its strict decoder rejects unknown
// fields, missing required fields and wrong types, panel options included (per panel type,
// once the SDK's plugins are registered). `make tools` builds it into ~/.cache/pooch/bin.
//
//	pooch-grafana-schemacheck deploy/k8s/pooch/files/dashboards/*.json
package main

import (
	"fmt"
	"os"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// orNil turns the SDK's empty BuildErrors (a typed nil that is a non-nil error) into nil.
func orNil(err error) error {
	if errs, ok := err.(cog.BuildErrors); ok && len(errs) == 0 {
		return nil
	}
	return err
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: pooch-grafana-schemacheck FILE.json...")
		os.Exit(2)
	}
	// Panel options and field configs are checked against their panel type's schema too.
	plugins.RegisterDefaultPlugins()
	failed := 0
	for _, path := range os.Args[1:] {
		raw, err := os.ReadFile(path)
		if err == nil {
			var d dashboard.Dashboard
			if err = orNil(d.UnmarshalJSONStrict(raw)); err == nil {
				err = orNil(d.Validate())
			}
		}
		if err != nil {
			failed++
			fmt.Printf("%s: INVALID: %v\n", path, err)
			continue
		}
		fmt.Printf("%s: valid\n", path)
	}
	if failed > 0 {
		os.Exit(1)
	}
}
