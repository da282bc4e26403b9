#!/usr/bin/env node
'use strict'
// steve's name for its control tool: stevie CMD, stevie --get-jobs. The same tool as stevectl.
require('./stevectl.js')
