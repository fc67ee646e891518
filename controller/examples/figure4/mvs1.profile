; Routing switch MVS1 of the design's figure 4 (protocol stack 22).
; DVA1 = 203.0.113.10, DVB1 = 203.0.113.20, XCFn = 10.0.0.n (the stack on MVSn).
VIPADYNAMIC
  VIPADEFINE MOVEABLE IMMEDIATE 255.255.255.0 203.0.113.10     ; DVA1
  VIPADISTRIBUTE 203.0.113.10 PORT 60
                 DESTIP 10.0.0.1, 10.0.0.2, 10.0.0.4           ; XCF1, XCF2, XCF4
  VIPABACKUP 30 203.0.113.20                                   ; DVB1
ENDVIPADYNAMIC
