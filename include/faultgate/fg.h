/* faultgate/fg.h - umbrella header: includes every public module. */
#ifndef FAULTGATE_FG_H
#define FAULTGATE_FG_H

#include "faultgate/capture.h"
#include "faultgate/error.h"
#include "faultgate/expect.h"
#include "faultgate/fake_mta.h"
#include "faultgate/fault.h"
#include "faultgate/gateway.h"
#include "faultgate/injector.h"
#include "faultgate/judge.h"
#include "faultgate/meta.h"
#include "faultgate/profile.h"
#include "faultgate/proxy.h"
#include "faultgate/results.h"
#include "faultgate/scenario.h"
#include "faultgate/smtp.h"
#include "faultgate/timeline.h"
#include "faultgate/trace.h"
#include "faultgate/util.h"
#include "faultgate/yamldoc.h"

#endif
