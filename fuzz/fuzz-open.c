/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd fuzzing: open and validate one file.
 *
 * Footer (and its copy at offset 0), dynamic header, BAT, locators: the
 * whole of vhd_layer_open (read-only), with and then without checksums
 * checked.  The file is the whole input, so seeds are plain VHD files.
 * Then what vhdtool info shows: every locator's text, the allocated
 * blocks.
 */
#include <config.h>

#include <stdlib.h>

#include "common.h"

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
  int pass;

  fuzz_quiet ();
  fuzz_write_file ("a.vhd", data, size);
  /* Strict first, then accepting bad checksums (what --ignore-checksums
   * does), which lets the mutator past the checksums. */
  for (pass = 0; pass < 2; pass++) {
    o.ignore_checksums = pass;
    if (vhd_layer_open (fuzz_path (0, "a.vhd"), false, &o, &f) == 0) {
      examine (f);
      vhd_layer_close (f);
    }
  }
  return 0;
}
