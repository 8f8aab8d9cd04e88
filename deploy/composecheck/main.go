// composecheck loads a Compose file with compose-go, the loader Docker Compose itself uses:
// schema validation against the Compose Specification, YAML anchors and merge keys,
// interpolation, and the semantic checks (unknown depends_on services, invalid conditions,
// ...), all without a Docker engine. It prints the normalised project as JSON, which the suite
// compares with the code's settings. `make tools` builds it into ~/.cache/pooch/bin.
//
//	pooch-composecheck docker-compose.yml
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: pooch-composecheck docker-compose.yml")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions(
		[]string{os.Args[1]},
		// Variables left unset interpolate to their defaults (${VAR:-default}), as for a user
		// who sets nothing; the environment is not read, so the result does not depend on it.
		cli.WithName("pooch"),
		cli.WithResolvedPaths(false),
	)
	if err == nil {
		project, loadErr := options.LoadProject(context.Background())
		if loadErr == nil {
			out, marshalErr := json.Marshal(project)
			if marshalErr == nil {
				fmt.Println(string(out))
				return
			}
			err = marshalErr
		} else {
			err = loadErr
		}
	}
	fmt.Fprintln(os.Stderr, "INVALID:", err)
	os.Exit(1)
}
