/*
 * builtin.h - the modules compiled into actiond, and the specs the build
 * embeds for them (see src/meson.build).
 */
#ifndef AD_BUILTIN_H
#define AD_BUILTIN_H

#include "actiond/module.h"

extern const struct ad_module_info ad_protocol_module;
extern const struct ad_module_info ad_identity_module;
extern const struct ad_module_info ad_integrations_module;
extern const struct ad_module_info ad_data_module;
extern const struct ad_module_info ad_test_module;

/* Every built-in module of this build, NULL-terminated, in load order. */
extern const struct ad_module_info *const ad_builtin_modules[];

extern const struct ad_module_text ad_protocol_specs[];
extern const size_t ad_protocol_specs_count;
extern const struct ad_module_text ad_identity_specs[];
extern const size_t ad_identity_specs_count;
extern const struct ad_module_text ad_integrations_specs[];
extern const size_t ad_integrations_specs_count;
extern const struct ad_module_text ad_integrations_adapters[];
extern const size_t ad_integrations_adapters_count;
extern const struct ad_module_text ad_integrations_migrations[];
extern const size_t ad_integrations_migrations_count;
extern const struct ad_module_text ad_data_specs[];
extern const size_t ad_data_specs_count;
extern const struct ad_module_text ad_data_migrations[];
extern const size_t ad_data_migrations_count;
extern const struct ad_module_text ad_test_specs[];
extern const size_t ad_test_specs_count;

/* Precomputes what identity needs (blocking, ~0.1 s). */
int ad_identity_init(void);

#endif
