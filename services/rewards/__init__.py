"""The rewards service: the points mall's catalogue, redemptions as durable sagas with points,
and the members' coupon wallets."""
