/* faultgate/datadir.h - where the bundled suites and gateway profiles are,
 * and how a bare name on the command line ("kb", "postfix") finds them.
 *
 * The data root is the directory that holds scenarios/ (and reports/): in
 * an installed faultgate $datadir/faultgate, in a build tree the source
 * tree.  Lookup order, first that holds scenarios/ wins:
 *   1. $FAULTGATE_DATADIR;
 *   2. <directory of the faultgate executable>/../share/faultgate (an
 *      install, moved or under DESTDIR);
 *   3. the datadir compiled in at configure time;
 *   4. the source tree, when the executable runs from its build tree.
 * A path that exists as given always wins over the data root. */
#ifndef FAULTGATE_DATADIR_H
#define FAULTGATE_DATADIR_H

/* fg_datadir - the data root, or NULL when none is found.  The string is
 * owned by the module and lives until exit. */
const char *fg_datadir(void);

enum fg_datadir_kind {
    FG_DATA_SUITE,   /* a scenario file or directory: scenarios/<name> */
    FG_DATA_PROFILE, /* a gateway profile: scenarios/gateways/<name>[.yaml] */
};

/* fg_datadir_resolve - what name means: name itself when it exists, else
 * the first of the data root's candidates for kind that exists, else name
 * unchanged (the caller's open then reports it).  Caller frees. */
char *fg_datadir_resolve(const char *name, enum fg_datadir_kind kind);

/* fg_datadir_default_profile - the bundled refgw profile (correct mode),
 * the default gateway under test.  Caller frees. */
char *fg_datadir_default_profile(void);

#endif
