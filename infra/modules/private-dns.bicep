// Private DNS zones for the storage private endpoints (blob, dfs, queue, table), linked to the VNet of the
// endpoints' subnet. Skipped when the zones already exist centrally (privateDnsZonesResourceGroupId in main.bicep).
param vnetId string
param tags object

var zoneNames = [for groupId in ['blob', 'dfs', 'queue', 'table']: 'privatelink.${groupId}.${environment().suffixes.storage}']

resource zones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for zone in zoneNames: {
  name: zone
  location: 'global'
  tags: tags
}]

resource links 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (zone, i) in zoneNames: {
  parent: zones[i]
  name: 'link-${uniqueString(vnetId)}'
  location: 'global'
  tags: tags
  properties: { registrationEnabled: false, virtualNetwork: { id: vnetId } }
}]
