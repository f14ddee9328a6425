/*
 * metrics.h - the /metrics page, assembled from every layer's figures.
 */
#ifndef AD_METRICS_H
#define AD_METRICS_H

#include "buf.h"

void ad_metrics_page(struct ad_buf *b);

#endif
