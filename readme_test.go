package tern_test

import (
	"bufio"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every Go code block in a README of the repository is a copy of a program that the test
// command builds: the block is preceded by a line "<!-- file: PATH -->" naming the file (from
// the repository root), and must equal it byte for byte. So the docs always compile. YAML
// blocks (tern run scenarios) follow the same rule, naming a scenario the tests run.
func TestReadmeCodeBlocksAreBuiltPrograms(t *testing.T) {
	var readmes []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && d.Name() == "README.md" {
			readmes = append(readmes, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	blocks := 0
	for _, readme := range readmes {
		data, err := os.ReadFile(readme)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		var prev, file string
		var code *strings.Builder
		line := 0
		for sc.Scan() {
			text := sc.Text()
			line++
			switch {
			case code != nil && text == "```":
				blocks++
				want, err := os.ReadFile(file)
				if err != nil {
					t.Errorf("%s:%d: %v", readme, line, err)
				} else if code.String() != string(want) {
					t.Errorf("%s:%d: the code block differs from %s; copy the file into the README", readme, line, file)
				}
				code = nil
			case code != nil:
				code.WriteString(text + "\n")
			case strings.HasPrefix(text, "```go"), strings.HasPrefix(text, "```yaml"):
				name, ok := strings.CutPrefix(prev, "<!-- file: ")
				name, ok2 := strings.CutSuffix(name, " -->")
				if !ok || !ok2 {
					t.Errorf("%s:%d: a Go or YAML code block must follow a line <!-- file: PATH --> naming the file it copies", readme, line)
				}
				file, code = name, &strings.Builder{}
			}
			prev = text
		}
	}
	if blocks == 0 {
		t.Fatal("no Go code blocks found: the README quick start is missing")
	}
}
