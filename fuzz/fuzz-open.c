/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd fuzzing: open and validate one file.
 *
 * Footer (and its copy at offset 0), dynamic header, BAT, locators: the
 * whole of vhd_layer_open (read-only), with and then without checksums
 * checked.  The file is the whole input, so seeds are plain VHD files.
 * Then what vhdtool info shows: every locator's text, the allocated
 * blocks.  Last, what vhdtool scan does with each file: the format
 * probe and an open of the headers only (no block table).
 *
 * An input starting with VHDX_FUZZ_MAGIC is a VHDX one instead (the
 * template and its patches, vhdx-template.h): a.vhdx is opened alone
 * the same way.
 */
#include <config.h>

#include <stdlib.h>

#include "common.h"
#include "vhdx-template.h"

static void
examine (struct vhd_layer *l)
{
  struct vhd_layer_info info;

  /* Everything vhdtool info shows: every locator's text, the
   * allocated blocks, the type. */
  vhd_layer_describe (l, &info);
  (void) vhd_type_name (info.type);
  (void) vhd_layer_type (l);
  vhd_layer_info_free (&info);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct vhd_open_options o = {
    .readonly = true, .no_lock = true, .no_parents = true,
  };
  struct vhd_layer *f;
  const char *path;
  bool vhdx = vhdx_fuzz_input (data, size);
  int pass;

  fuzz_quiet ();
  if (vhdx) {
    struct vhdx_fuzz x;
    vhdx_fuzz_build (data, size, &x);
    path = fuzz_path (0, VHDX_FUZZ_NAMES[0]);
  }
  else {
    fuzz_write_file ("a.vhd", data, size);
    path = fuzz_path (0, "a.vhd");
  }
  /* Strict first, then accepting bad checksums (what --ignore-checksums
   * does), which lets the mutator past the checksums.  VHDX files do
   * not depend on that option (the template's CRC fix-ups get the
   * mutator past them), so they are opened once. */
  for (pass = 0; pass < (vhdx ? 1 : 2); pass++) {
    o.ignore_checksums = pass;
    if (vhd_layer_open (path, false, &o, &f) == 0) {
      examine (f);
      vhd_layer_close (f);
    }
  }
  (void) vhd_probe_format (path);
  o.ignore_checksums = false;
  o.headers_only = true;
  if (vhd_layer_open (path, false, &o, &f) == 0) {
    examine (f);
    vhd_layer_close (f);
  }
  if (vhdx)
    vhdx_fuzz_assert_intact ();
  return 0;
}
