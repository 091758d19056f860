package main

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/rogpeppe/go-internal/testscript"
)

// ociextract LAYOUT NAME DIR flattens the image of the OCI layout whose ref
// name contains NAME into DIR, as a container runtime would unpack it
// (modes kept, owned by whoever runs the test): the scripts then run what
// the chart's init containers run, on the images' own files.
func cmdOCIExtract(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: ociextract LAYOUT NAME DIR")
	}
	lp, err := layout.FromPath(ts.MkAbs(args[0]))
	ts.Check(err)
	idx, err := lp.ImageIndex()
	ts.Check(err)
	im, err := idx.IndexManifest()
	ts.Check(err)
	for _, d := range im.Manifests {
		if !strings.Contains(d.Annotations["org.opencontainers.image.ref.name"], args[1]) {
			continue
		}
		img, err := idx.Image(d.Digest)
		ts.Check(err)
		rc := mutate.Extract(img)
		defer rc.Close()
		dir := ts.MkAbs(args[2])
		ts.Check(os.MkdirAll(dir, 0o755))
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				return
			}
			ts.Check(err)
			p := filepath.Join(dir, filepath.FromSlash(h.Name))
			if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
				ts.Fatalf("image entry %q escapes %s", h.Name, dir)
			}
			switch h.Typeflag {
			case tar.TypeDir:
				ts.Check(os.MkdirAll(p, os.FileMode(h.Mode)))
			case tar.TypeReg:
				ts.Check(os.MkdirAll(filepath.Dir(p), 0o755))
				f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, os.FileMode(h.Mode))
				ts.Check(err)
				_, err = io.Copy(f, tr)
				ts.Check(err)
				ts.Check(f.Close())
				ts.Check(os.Chmod(p, os.FileMode(h.Mode)))
			default:
				ts.Fatalf("image entry %q is not a file or directory", h.Name)
			}
		}
	}
	ts.Fatalf("no image named like %q in %s", args[1], args[0])
}
