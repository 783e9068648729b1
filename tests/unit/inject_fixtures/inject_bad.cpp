// A library that dlopen(RTLD_NOW) must refuse: it needs a symbol nothing defines.
extern "C" int inject_probe_symbol_that_does_not_exist();

extern "C" int inject_bad_entry() { return inject_probe_symbol_that_does_not_exist() + 1; }
